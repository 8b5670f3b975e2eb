"""microgpt_lib.device: device selection (with GPUs mocked), dtype rules, the gpu suite's rows."""

import argparse
import json

import pytest
import torch

from microgpt_lib import bench, device

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = device.is_available("mps")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with a CUDA build of torch")
needs_mps = pytest.mark.skipif(not HAS_MPS, reason="needs a Mac with Apple's Metal (MPS) backend")


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


@pytest.mark.parametrize("cuda, mps, expected", [(False, False, "cpu"), (False, True, "mps"),
                                                 (True, False, "cuda"), (True, True, "cuda")])
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
    with pytest.raises(device.DeviceUnavailableError, match=f"{device.DEVICE_ENV}.*'cuda'.*Available here: cpu"):
        device.pick_device()
    with pytest.raises(device.DeviceUnavailableError, match="the argument asks for device 'mps'"):
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
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos_14, raising=False)
    supported = device.supported_dtypes("mps")
    assert "float64" not in supported and "float32" in supported and "float16" in supported
    assert ("bfloat16" in supported) == macos_14
    with pytest.raises(TypeError, match="float64 is not supported on mps.*64-bit"):
        device.torch_dtype("float64", "mps")


@pytest.mark.parametrize("bf16", [True, False])
def test_cuda_dtypes(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    supported = device.supported_dtypes("cuda")
    assert supported[:2] == ["float64", "float32"] and ("bfloat16" in supported) == bf16


@pytest.mark.parametrize("capability, expected", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
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
    assert x.to("cpu") is x  # why transfer_rows has nothing to measure on the CPU
    assert device.transfer_rows(torch.device("cpu")) == [] and device.memory_rows(torch.device("cpu")) == []


# --------------------------------------------------------------------------------------------
# measurements: pure helpers and the suite's rows


def test_crossover_size():
    rows = [{"kernel": "numpy", "n": n, "median_s": s} for n, s in [(16, 1), (32, 2), (64, 4), (128, 8)]]
    rows += [{"kernel": "gpu", "n": n, "median_s": s} for n, s in [(16, 5), (32, 1), (64, 5), (128, 3)]]
    assert device.crossover_size(rows, "gpu") == 128  # 32 wins once, but loses again at 64
    rows[-2]["median_s"] = 3  # now it wins from 32 on
    assert device.crossover_size(rows, "gpu") == 32
    rows[-1]["median_s"] = 9
    assert device.crossover_size(rows, "gpu") is None


def test_relative_error():
    reference = torch.tensor([[3.0, 4.0]])
    assert device.relative_error(reference, reference) == 0
    assert device.relative_error(torch.tensor([[3.0, 4.5]]), reference) == pytest.approx(0.1)


def test_layer_chain_matches_a_hand_written_loop():
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 4, generator=generator) for _ in range(3)]
    x = torch.randn(4, 4, generator=generator)
    expected = torch.tanh(torch.tanh(torch.tanh(x @ weights[0]) @ weights[1]) @ weights[2])
    torch.testing.assert_close(device.layer_chain(x, weights), expected)


def test_precision_errors_follow_the_mantissa_width():
    rows = {r["mode"]: r for r in device.precision_rows(torch.device("cpu"), [64], repeats=1)}
    assert list(rows) == ["float32", "bfloat16", "float16"]  # no tf32 on a CPU
    assert rows["float32"]["relative_error"] < rows["float16"]["relative_error"] < rows["bfloat16"]["relative_error"]
    for row in rows.values():  # a sum of 64 products: error within a small multiple of the rounding unit
        assert row["relative_error"] < 4 * row["epsilon"]
    with pytest.raises(ValueError, match="tf32 are not available on cpu"):
        device.precision_rows(torch.device("cpu"), [16], ["tf32"])


MATMUL_KEYS = {"kernel", "family", "n", "dtype", "threads", "median_s", "min_s", "max_s", "gflops"}


def quick_options(**overrides):
    options = bench.build_parser().parse_args(["gpu", "--quick"])
    return argparse.Namespace(**{**vars(options), **overrides})


def test_gpu_suite_rows(tmp_path, no_env):
    rows = device.suite_gpu(quick_options())
    lessons = {r["lesson"] for r in rows}
    expected = {"resident", "sync", "launch", "crossover", "precision"}
    if device.pick_device().type != "cpu":
        expected |= {"transfer", "memory"}
    assert lessons == expected
    for row in rows:
        assert row["device"] == device.pick_device().type and row["device_name"]
        if row["lesson"] in ("sync", "crossover", "precision"):
            assert MATMUL_KEYS <= set(row), row
            assert row["gflops"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
    crossover = [r for r in rows if r["lesson"] == "crossover"]
    assert {r["kernel"] for r in crossover} >= {"numpy", f"torch-{device.pick_device().type}"}
    # the rows survive the trip through a result file
    path = bench.save_results(bench.make_result("gpu", rows, command="test"), tmp_path / "gpu.json")
    loaded = bench.load_results(path)
    assert loaded["rows"][0]["suite"] == "gpu" and json.dumps(loaded)


def test_gpu_suite_dtypes_option(no_env):
    options = quick_options(dtypes=["float64", "bfloat16"], sizes=[16])
    rows = device.suite_gpu(options)
    assert [r["mode"] for r in rows if r["lesson"] == "precision"] == ["float64", "bfloat16"]
    assert {r["n"] for r in rows if r["lesson"] == "crossover"} == {16}
    float64 = next(r for r in rows if r.get("mode") == "float64")
    assert float64["relative_error"] == 0  # the reference itself


def test_compiled_chain_matches_eager():
    """torch.compile on the CPU (about 25 s: it generates and compiles C++ for the fused chain)."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(16, 16, generator=generator) / 4 for _ in range(8)]
    x = torch.randn(16, 16, generator=generator)
    torch.testing.assert_close(torch.compile(device.layer_chain)(x, weights), device.layer_chain(x, weights))
    rows = device.launch_rows(torch.device("cpu"), numels=(1,), repeats=1, compile=True)
    compiled = [r for r in rows if r.get("method", "").startswith("torch.compile")]
    assert len(compiled) == 1 and "error" not in compiled[0] and compiled[0]["compile_s"] > 0


# --------------------------------------------------------------------------------------------
# on real GPUs


@needs_cuda
def test_cuda_selected_and_measured(no_env):
    cuda = device.pick_device()
    assert cuda.type == "cuda"
    assert "float64" in device.supported_dtypes(cuda)
    transfers = device.transfer_rows(cuda, [1], repeats=2)
    assert {r["memory"] for r in transfers} == {"pageable", "pinned"}
    stages = [r for r in device.memory_rows(cuda, 16, repeats=2) if r["experiment"] == "stages"]
    after_alloc, after_del = stages[1], stages[2]
    assert after_alloc["allocated_bytes"] - stages[0]["allocated_bytes"] >= 16 << 20
    assert after_del["reserved_bytes"] >= after_alloc["allocated_bytes"]  # freed, but still cached
    assert device.memory_stats(cuda)["total"] > 0


@needs_cuda
def test_cuda_graph_replays_the_same_result():
    cuda = torch.device("cuda")
    weights = [torch.randn(16, 16, device=cuda) for _ in range(4)]
    x = torch.randn(16, 16, device=cuda)
    replay = device._cuda_graph(lambda: device.layer_chain(x, weights))
    torch.testing.assert_close(replay(), device.layer_chain(x, weights))


@needs_mps
def test_mps_selected_and_float64_refused(no_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = device.pick_device()
    assert mps.type == "mps"
    with pytest.raises(TypeError):
        torch.ones(2, dtype=torch.float64, device=mps)  # torch itself refuses, as the rules say
    stats = device.memory_stats(mps)
    assert {"allocated", "reserved", "recommended_max"} <= set(stats)
    rows = device.transfer_rows(mps, [1], repeats=2)
    assert {r["memory"] for r in rows} == {"pageable"}
