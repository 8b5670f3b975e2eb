"""microgpt_lib.device_lab: chapter 07's lessons, their pure helpers and the gpu suite's rows."""

import json
import statistics
import time

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


# --------------------------------------------------------------------------------------------
# the simulated queue, and the exercises


def test_simulated_gpu_returns_at_once_and_synchronize_waits():
    gpu = device_lab.SimulatedGPU(op_s=0.01)
    start = time.perf_counter()
    gpu.op()
    gpu.op()
    queued_s = time.perf_counter() - start
    gpu.synchronize()
    assert queued_s < 0.005 <= 0.02 <= time.perf_counter() - start
    assert (gpu.ops, gpu.syncs) == (2, 1)
    with pytest.raises(ValueError, match="op_s must be positive"):
        device_lab.SimulatedGPU(0)


def test_simulated_sync_rows_show_the_wrong_and_the_right_timing():
    rows = {r["method"]: r for r in device_lab.simulated_sync_rows(op_s=0.004, repeats=3)}
    assert rows["no sync (wrong)"]["median_s"] < 0.001  # only the queueing
    assert rows["synchronize"]["median_s"] >= 0.004  # the work itself


def test_check_gpu_timer_accepts_the_reference():
    assert "right" in device_lab.check_gpu_timer(device_lab.reference_gpu_timer)


def no_sync_timer(fn, sync, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sync_after_only_timer(fn, sync, repeats=5):
    fn()  # warm-up, left in the queue
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summed_timer(fn, sync, repeats=5):
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return time.perf_counter() - start  # the total, not per call


@pytest.mark.parametrize(
    "timer, message",
    [
        (no_sync_timer, "still queued"),
        (sync_after_only_timer, "queued before the clock started"),
        (summed_timer, "sum of the repeats"),
        (lambda fn, sync: 0.0, "timer\\(fn, sync, repeats\\)"),
    ],
)
def test_check_gpu_timer_rejects_wrong_timers(timer, message):
    with pytest.raises(AssertionError, match=message):
        device_lab.check_gpu_timer(timer)


def test_counted_tensor_counts_reads_back_to_the_host():
    x = torch.ones(3).as_subclass(device_lab.CountedTensor)
    device_lab.CountedTensor.reads.clear()
    (x * 2).sum().item()
    float(x[0])
    x.to("cpu")
    x.to(torch.float64)  # a dtype change stays on the device: not a read
    torch.stack([x, x]).tolist()
    assert device_lab.CountedTensor.reads == ["item", "__float__", "to", "tolist"]


def test_check_run_steps_accepts_the_reference_and_rejects_item_every_step():
    message = device_lab.check_run_steps(device_lab.reference_run_steps, steps=5)
    assert message.startswith("right: 1 read(s) back for 5 steps")
    with pytest.raises(AssertionError, match="5 reads back from the device for 5 steps"):
        device_lab.check_run_steps(device_lab.item_every_step, steps=5)


@pytest.mark.parametrize(
    "run_steps, message",
    [
        (lambda step, steps: [step() for _ in range(steps)], "list of Python floats"),
        (lambda step, steps: [step().item() for _ in range(3)], "3 losses for 5 steps"),
        (
            lambda step, steps: torch.stack([step() for _ in range(steps)]).tolist()[
                ::-1
            ],
            "in order",
        ),
        (lambda step, steps: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_check_run_steps_rejects_wrong_loops(run_steps, message):
    with pytest.raises(AssertionError, match=message):
        device_lab.check_run_steps(run_steps, steps=5)


def test_launch_chain_runs_on_one_cpu_thread_and_restores_the_count():
    before = torch.get_num_threads()
    rows = device_lab.launch_rows(torch.device("cpu"), numels=(1,), repeats=1)
    chain = [r for r in rows if r["part"] == "chain"]
    assert {r["method"] for r in chain} == {"eager", "eager, batch of 64"}
    assert all(r["torch_threads"] == 1 for r in chain)
    assert torch.get_num_threads() == before
