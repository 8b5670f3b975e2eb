"""microgpt_lib.device: device selection (with GPUs mocked), dtype rules, sync and memory."""

import pytest
import torch

from microgpt_lib import device, device_lab

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = device.is_available("mps")
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs an NVIDIA GPU with a CUDA build of torch"
)
needs_mps = pytest.mark.skipif(
    not HAS_MPS, reason="needs a Mac with Apple's Metal (MPS) backend"
)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)


@pytest.fixture
def fake_gpus(monkeypatch, no_env):
    """Pretend CUDA and/or MPS exist: returns a function setting which ones."""

    def set_gpus(cuda: bool = False, mps: bool = False, cuda_count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_gpus


# --------------------------------------------------------------------------------------------
# selection


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [
        (False, False, "cpu"),
        (False, True, "mps"),
        (True, False, "cuda"),
        (True, True, "cuda"),
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(fake_gpus, cuda, mps, expected):
    fake_gpus(cuda=cuda, mps=mps)
    assert device.pick_device() == torch.device(expected)
    assert device.pick_device("auto") == torch.device(expected)
    assert device.available_devices()[0] == expected
    assert device.available_devices()[-1] == "cpu"


def test_environment_variable_overrides_auto(fake_gpus, monkeypatch):
    fake_gpus(cuda=True, mps=False)
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert device.pick_device() == torch.device("cpu")
    monkeypatch.setenv(device.DEVICE_ENV, "CUDA")  # case and spaces do not matter
    assert device.pick_device() == torch.device("cuda")


def test_argument_beats_environment_variable(fake_gpus, monkeypatch):
    fake_gpus(cuda=True)
    monkeypatch.setenv(device.DEVICE_ENV, "cuda")
    assert device.pick_device("cpu") == torch.device("cpu")


def test_missing_gpu_is_a_clear_error_never_a_silent_cpu(fake_gpus, monkeypatch):
    fake_gpus(cuda=False, mps=False)
    monkeypatch.setenv(device.DEVICE_ENV, "cuda")
    with pytest.raises(
        device.DeviceUnavailableError,
        match=f"{device.DEVICE_ENV}.*'cuda'.*Available here: cpu",
    ):
        device.pick_device()
    with pytest.raises(
        device.DeviceUnavailableError, match="the argument asks for device 'mps'"
    ):
        device.pick_device("mps")


def test_cuda_index_beyond_the_visible_gpus(fake_gpus):
    fake_gpus(cuda=True, cuda_count=1)
    assert device.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(device.DeviceUnavailableError, match="only 1 CUDA device"):
        device.pick_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "tpu", "meta", "", "cuda:x"])
def test_unknown_device_names(name, no_env):
    with pytest.raises(ValueError, match="'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'"):
        device.pick_device(name)


def test_device_must_be_a_string_or_device():
    with pytest.raises(TypeError, match="str or torch.device"):
        device.pick_device(3)
    assert device.pick_device(torch.device("cpu")) == torch.device("cpu")


def test_why_unavailable_names_the_cause():
    if torch.version.cuda is None:
        assert "built without CUDA" in device.why_unavailable("cuda")
    if not HAS_MPS:
        assert "MPS" in device.why_unavailable("mps")
    with pytest.raises(ValueError, match="device kind"):
        device.is_available("tpu")


# --------------------------------------------------------------------------------------------
# dtypes


def test_cpu_computes_in_every_dtype():
    assert device.supported_dtypes("cpu") == ["float64", "float32", "bfloat16", "float16"]
    for name in device.DTYPES:
        assert device.torch_dtype(name, "cpu") is device.DTYPES[name]


@pytest.mark.parametrize("macos_14", [True, False])
def test_mps_has_no_float64(monkeypatch, macos_14):
    monkeypatch.setattr(
        torch.backends.mps,
        "is_macos_or_newer",
        lambda major, minor: macos_14,
        raising=False,
    )
    supported = device.supported_dtypes("mps")
    assert (
        "float64" not in supported and "float32" in supported and "float16" in supported
    )
    assert ("bfloat16" in supported) == macos_14
    with pytest.raises(TypeError, match="float64 is not supported on mps.*64-bit"):
        device.torch_dtype("float64", "mps")


@pytest.mark.parametrize("bf16", [True, False])
def test_cuda_dtypes(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    supported = device.supported_dtypes("cuda")
    assert supported[:2] == ["float64", "float32"] and ("bfloat16" in supported) == bf16


@pytest.mark.parametrize(
    "capability, expected", [((7, 5), False), ((8, 0), True), ((9, 0), True)]
)
def test_tf32_needs_ampere(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert device.supports_tf32("cuda") is expected
    assert device.supports_tf32("cpu") is False


def test_dtype_names_are_checked():
    assert device.torch_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        device.torch_dtype("float8")


def test_tf32_matmul_restores_the_setting():
    matmul = torch.backends.cuda.matmul
    attribute = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, attribute)
    with device.tf32_matmul():
        assert getattr(matmul, attribute) in ("tf32", True)
    assert getattr(matmul, attribute) == before


# --------------------------------------------------------------------------------------------
# sync, memory, describe on the CPU


def test_cpu_sync_and_memory():
    device.synchronize("cpu")  # a no-op, but callable
    assert device.sync_for("cpu") is None
    assert device.tracks_memory("cpu") is False and device.memory_stats("cpu") == {}
    device.empty_cache("cpu")
    info = device.describe("cpu")
    assert info["kind"] == "cpu" and info["name"] and info["threads"] >= 1
    x = torch.ones(3)
    assert (
        x.to("cpu") is x
    )  # why device_lab.transfer_rows has nothing to measure on the CPU


# --------------------------------------------------------------------------------------------
# on real GPUs


@needs_cuda
def test_cuda_selected_and_measured(no_env):
    cuda = device.pick_device()
    assert cuda.type == "cuda"
    assert "float64" in device.supported_dtypes(cuda)
    transfers = device_lab.transfer_rows(cuda, [1], repeats=2)
    assert {r["memory"] for r in transfers} == {"pageable", "pinned"}
    stages = [
        r for r in device_lab.memory_rows(cuda, 16, repeats=2) if r["part"] == "stages"
    ]
    after_alloc, after_del = stages[1], stages[2]
    assert after_alloc["allocated_bytes"] - stages[0]["allocated_bytes"] >= 16 << 20
    assert (
        after_del["reserved_bytes"] >= after_alloc["allocated_bytes"]
    )  # freed, but still cached
    assert device.memory_stats(cuda)["total"] > 0


@needs_mps
def test_mps_selected_and_float64_refused(no_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = device.pick_device()
    assert mps.type == "mps"
    with pytest.raises(TypeError):
        torch.ones(
            2, dtype=torch.float64, device=mps
        )  # torch itself refuses, as the rules say
    stats = device.memory_stats(mps)
    assert {"allocated", "reserved", "recommended_max"} <= set(stats)
    rows = device_lab.transfer_rows(mps, [1], repeats=2)
    assert {r["memory"] for r in rows} == {"pageable"}


def test_cpu_matmul_features():
    features = device.cpu_matmul_features()
    assert set(features) == {"simd", "capability", "avx512_bf16", "amx_bf16", "amx_fp16"}
    assert isinstance(features["simd"], list)
    if features["avx512_bf16"] is not None and "avx512_bf16" in features["simd"]:
        assert features["avx512_bf16"]  # torch and the OS agree
