"""microgpt_lib.device_lab: chapter 07's lessons, their pure helpers and the gpu suite's rows."""

import json

import pytest
import torch

from microgpt_lib import bench, device, device_lab

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs an NVIDIA GPU with a CUDA build of torch"
)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)


def test_cpu_has_no_copies_or_allocator_to_measure():
    assert device_lab.transfer_rows(torch.device("cpu")) == []
    assert device_lab.memory_rows(torch.device("cpu")) == []


def test_crossover_size():
    rows = [
        {"kernel": "numpy", "n": n, "median_s": s}
        for n, s in [(16, 1), (32, 2), (64, 4), (128, 8)]
    ]
    rows += [
        {"kernel": "gpu", "n": n, "median_s": s}
        for n, s in [(16, 5), (32, 1), (64, 5), (128, 3)]
    ]
    assert (
        device_lab.crossover_size(rows, "gpu") == 128
    )  # 32 wins once, but loses again at 64
    rows[-2]["median_s"] = 3  # now it wins from 32 on
    assert device_lab.crossover_size(rows, "gpu") == 32
    rows[-1]["median_s"] = 9
    assert device_lab.crossover_size(rows, "gpu") is None


def test_relative_error():
    reference = torch.tensor([[3.0, 4.0]])
    assert device_lab.relative_error(reference, reference) == 0
    assert device_lab.relative_error(
        torch.tensor([[3.0, 4.5]]), reference
    ) == pytest.approx(0.1)


def test_layer_chain_matches_a_hand_written_loop():
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 4, generator=generator) for _ in range(3)]
    x = torch.randn(4, 4, generator=generator)
    expected = torch.tanh(
        torch.tanh(torch.tanh(x @ weights[0]) @ weights[1]) @ weights[2]
    )
    torch.testing.assert_close(device_lab.layer_chain(x, weights), expected)


def test_precision_errors_follow_the_mantissa_width():
    rows = {
        r["mode"]: r
        for r in device_lab.precision_rows(torch.device("cpu"), [64], repeats=1)
    }
    assert list(rows) == ["float32", "bfloat16", "float16"]  # no tf32 on a CPU
    assert (
        rows["float32"]["relative_error"]
        < rows["float16"]["relative_error"]
        < rows["bfloat16"]["relative_error"]
    )
    for row in (
        rows.values()
    ):  # a sum of 64 products: error within a small multiple of the rounding unit
        assert row["relative_error"] < 4 * row["epsilon"]
    with pytest.raises(ValueError, match="tf32 are not available on cpu"):
        device_lab.precision_rows(torch.device("cpu"), [16], ["tf32"])


@pytest.mark.slow
def test_gpu_suite_rows(tmp_path, no_env, suite_options):
    rows = device_lab.suite_gpu(suite_options())
    kinds = {r["kind"] for r in rows}
    expected = {"resident", "sync", "launch", "crossover", "precision"}
    if device.pick_device().type != "cpu":
        expected |= {"transfer", "memory"}
    assert kinds == expected
    for row in rows:
        assert row["device"] == device.pick_device().type and row["device_name"]
        if row["kind"] in ("sync", "crossover", "precision"):
            assert set(bench.MATMUL_COLUMNS) <= set(row), row
            assert row["gflops"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
    crossover = [r for r in rows if r["kind"] == "crossover"]
    assert {r["kernel"] for r in crossover} >= {
        "numpy",
        f"torch-{device.pick_device().type}",
    }
    # the rows survive the trip through a result file
    result = bench.make_result("gpu", rows, command="test", machine="m", hardware={})
    path = bench.save_results(result, tmp_path / "gpu.json")
    loaded = bench.load_results(path)
    assert loaded["rows"][0]["suite"] == "gpu" and json.dumps(loaded)


@pytest.mark.slow
def test_gpu_suite_dtypes_option(no_env, suite_options):
    options = suite_options(dtypes=["float64", "bfloat16"], sizes=[16])
    rows = device_lab.suite_gpu(options)
    assert [r["mode"] for r in rows if r["kind"] == "precision"] == [
        "float64",
        "bfloat16",
    ]
    assert {r["n"] for r in rows if r["kind"] == "crossover"} == {16}
    float64 = next(r for r in rows if r.get("mode") == "float64")
    assert float64["relative_error"] == 0  # the reference itself


@pytest.mark.slow
def test_compiled_chain_matches_eager():
    """torch.compile on the CPU (about 25 s: it generates and compiles C++ for the fused chain)."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(16, 16, generator=generator) / 4 for _ in range(8)]
    x = torch.randn(16, 16, generator=generator)
    torch.testing.assert_close(
        torch.compile(device_lab.layer_chain)(x, weights),
        device_lab.layer_chain(x, weights),
    )
    rows = device_lab.launch_rows(
        torch.device("cpu"), numels=(1,), repeats=1, compile=True
    )
    compiled = [r for r in rows if r.get("method", "").startswith("torch.compile")]
    assert (
        len(compiled) == 1 and "error" not in compiled[0] and compiled[0]["compile_s"] > 0
    )


# --------------------------------------------------------------------------------------------
# on real GPUs


@needs_cuda
def test_cuda_graph_replays_the_same_result():
    cuda = torch.device("cuda")
    weights = [torch.randn(16, 16, device=cuda) for _ in range(4)]
    x = torch.randn(16, 16, device=cuda)
    replay = device_lab.cuda_graph(lambda: device_lab.layer_chain(x, weights))
    torch.testing.assert_close(replay(), device_lab.layer_chain(x, weights))
