"""The measuring primitives: timing, rates, rows, the collector, allocations, result files."""

import array
import gc
import json
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

from microgpt_lib import bench


def test_measure_reports_median_min_max_of_repeats():
    calls = []
    t = bench.measure(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 2 + 5
    assert t.repeats == 5 and t.number == 1 and len(t.times_s) == 5
    assert t.min_s <= t.median_s <= t.max_s
    assert t.median_s == sorted(t.times_s)[2]


def test_measure_uses_the_given_clock():
    ticks = iter(range(0, 1000, 1))  # each reading advances one "second"
    t = bench.measure(lambda: None, warmup=0, repeats=3, timer=lambda: next(ticks))
    assert t.median_s == t.min_s == t.max_s == 1.0


def test_measure_min_time_loops_fast_calls():
    t = bench.measure(lambda: None, repeats=3, min_time=0.005)
    assert t.number > 100  # an empty call needs many repeats to fill 5 ms
    assert t.median_s < 1e-5


def test_measure_calls_sync_around_every_sample():
    events = []
    bench.measure(
        lambda: events.append("call"),
        warmup=1,
        repeats=2,
        sync=lambda: events.append("sync"),
    )
    # warm-up, then (sync, call, sync) per sample: the clock never runs across unfinished work
    assert events == ["call", "sync", "sync", "call", "sync", "sync", "call", "sync"]


def test_measure_timing_is_plausible():
    t = bench.measure(lambda: time.sleep(0.01), warmup=0, repeats=3)
    assert 0.009 < t.median_s < 0.2


@pytest.mark.parametrize(
    "kwargs, message", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")]
)
def test_measure_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.measure(lambda: None, **kwargs)


def test_flop_arithmetic():
    assert bench.matmul_flops(2, 3, 4) == 48
    assert bench.gflops(2e9, 2.0) == 1.0
    assert bench.percent_of_peak(25.0, 50.0) == 50.0


def _result():
    rows = [
        {
            "kernel": "numpy",
            "family": "blas",
            "n": 4,
            "dtype": "float64",
            "threads": 1,
            "median_s": 1e-6,
            "min_s": 9e-7,
            "max_s": 2e-6,
            "gflops": np.float64(0.128),
        }
    ]
    return bench.make_result(
        "matmul-intro",
        rows,
        command="test",
        machine="x-1-cores",
        hardware={"cpu": {"model": "X", "logical_cores": 1}},
    )


def test_json_round_trip(tmp_path):
    path = bench.save_results(_result(), tmp_path / "r.json")
    again = bench.load_results(path)
    assert again["suite"] == "matmul-intro" and again["command"] == "test"
    assert again["rows"][0]["suite"] == "matmul-intro"
    assert again["rows"][0]["gflops"] == pytest.approx(
        0.128
    )  # numpy scalar stored as a number
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_csv_has_one_line_per_row(tmp_path):
    path = bench.save_results(_result(), tmp_path / "r.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("suite,kernel,family,n,dtype,threads,median_s")
    assert len(lines) == 2


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = bench.save_results(_result(), tmp_path / "r.json")
    before = path.read_text()
    bad = _result()
    bad["rows"][0]["gflops"] = object()  # cannot be stored
    with pytest.raises(TypeError, match="cannot store"):
        bench.save_results(bad, path)
    assert path.read_text() == before
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not a valid result file"),
        ('{"suite": "x"}', "missing"),
        (
            '{"schema": 99, "suite": "x", "hardware": {}, "rows": [], "command": ""}',
            "schema",
        ),
    ],
)
def test_load_results_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        bench.load_results(path)


def test_schema_1_files_are_read_as_schema_2(tmp_path):
    result = _result()
    result["schema"] = 1
    result["rows"] = [
        {"measurement": "matvec", "gc": "on", "pct_of_peak": 5.0},
        {"lesson": "launch", "experiment": "chain"},
        {"experiment": "sweep", "gc": "paused"},
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(result))
    rows = bench.load_results(path)["rows"]
    assert rows == [
        {"kind": "matvec", "gc": "enabled", "percent_of_peak": 5.0},
        {"kind": "launch", "part": "chain"},
        {"kind": "sweep", "gc": "paused"},
    ]
    assert json.loads(path.read_text())["rows"][0] == {
        "measurement": "matvec",
        "gc": "on",
        "pct_of_peak": 5.0,
    }  # the file is untouched


def test_recorded_results_finds_files_by_suite(tmp_path):
    bench.save_results(
        _result(), bench.recorded_path("machine-a", "matmul-intro", tmp_path)
    )
    bench.save_results(
        _result(), bench.recorded_path("machine-b", "matmul-intro", tmp_path)
    )
    found = bench.recorded_results("matmul-intro", tmp_path)
    assert [r["path"].split("/")[-1] for r in found] == [
        "machine-a--matmul-intro.json",
        "machine-b--matmul-intro.json",
    ]
    assert bench.recorded_results("peak", tmp_path) == []


def test_committed_results_are_valid():
    for path in sorted(bench.RESULTS_DIR.glob("*.json")):
        result = bench.load_results(path)
        machine, _, suite = path.stem.partition("--")
        assert result["suite"] == suite and result["machine"] == machine, path.name
        assert result["rows"], path.name
        assert result["command"].startswith("python -m microgpt_lib.bench"), path.name


def test_result_files_are_readable_by_everyone(tmp_path):
    path = bench.save_results(_result(), tmp_path / "r.json")
    assert path.stat().st_mode & 0o044 == 0o044


def test_measure_interleaved_times_each_case():
    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1

    timings = bench.measure_interleaved(
        {"a": lambda: bump("a"), "b": lambda: bump("b")}, repeats=3, min_time=0.001
    )
    assert set(timings) == {"a", "b"}
    for name, t in timings.items():
        assert t.repeats == 3 and len(t.times_s) == 3 and t.number >= 1
        assert t.min_s <= t.median_s <= t.max_s
        assert (
            calls[name] >= 3 * t.number
        )  # every sample ran the calibrated number of calls


def test_measure_interleaved_syncs_per_case():
    synced = []
    timings = bench.measure_interleaved(
        {"plain": lambda: None, "synced": lambda: None},
        repeats=2,
        syncs={"synced": lambda: synced.append(1)},
    )
    assert set(timings) == {"plain", "synced"}
    assert (
        len(synced) >= 2 * 3
    )  # before and after each timed sample, and around the calibration run


def test_measure_interleaved_takes_turns_and_rejects_no_repeats():
    order = []
    bench.measure_interleaved({k: (lambda k=k: order.append(k)) for k in "ab"}, repeats=3)
    assert order[-6:] == ["a", "b", "a", "b", "a", "b"]  # one sample of each per round
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.measure_interleaved({}, repeats=0)


def test_timing_from_samples():
    t = bench.Timing.from_times([3.0, 1.0, 2.0], number=4)
    assert (t.median_s, t.min_s, t.max_s, t.repeats, t.number) == (2.0, 1.0, 3.0, 3, 4)
    with pytest.raises(ValueError, match="no samples"):
        bench.Timing.from_times([])


def test_matmul_row_has_the_one_schema():
    t = bench.Timing.from_times([2e-3, 1e-3, 3e-3])
    row = bench.matmul_row("numpy", "blas", 100, "float64", 2, t, layout="a @ b")
    # the schema's columns in order, the extra field after the thread count
    assert tuple(k for k in row if k != "layout") == bench.MATMUL_COLUMNS
    assert list(row).index("layout") == bench.MATMUL_COLUMNS.index("threads") + 1
    assert row["gflops"] == pytest.approx(2 * 100**3 / 2e-3 / 1e9)


def test_peak_rows_and_percent_of_peak():
    peak = {
        "dtype": "float64",
        "per_core_gflops": 10.0,
        "gflops": 16.0,
        "threads": 2,
        "median_gflops_all": 15.0,
    }
    peaks = bench.peak_rows(peak)
    assert [(p["threads"], p["gflops"]) for p in peaks] == [(1, 10.0), (2, 16.0)]
    rows = [
        {"kernel": "k", "dtype": "float64", "threads": 1, "gflops": 5.0},
        {"kernel": "k", "dtype": "float64", "threads": 2, "gflops": 8.0},
        {"kernel": "k", "dtype": "float64", "threads": 4, "gflops": 20.0},  # 4 x one core
        {
            "kernel": "k",
            "dtype": "float32",
            "threads": 1,
            "gflops": 5.0,
        },  # no float32 peak
        {"kernel": "k", "dtype": "float64", "threads": 1},
    ]  # no rate
    out = bench.with_percent_of_peak(rows, peaks)
    assert [r.get("percent_of_peak") for r in out] == [50.0, 50.0, 50.0, None, None]
    assert out[2]["peak_gflops"] == 40.0 and "percent_of_peak" not in rows[0]  # copies


def test_check_dtype_names_the_allowed_dtypes():
    assert bench.check_dtype("float32") == "float32"
    with pytest.raises(ValueError, match="float64, float32; got 'int8'"):
        bench.check_dtype("int8")


def test_suite_options_quick_rounds_and_checks():
    assert bench.SuiteOptions().rounds == 7
    assert bench.SuiteOptions(quick=True).rounds == 3
    assert bench.SuiteOptions(quick=True, repeats=2).rounds == 2
    assert bench.SuiteOptions(sizes=[4, 8]).sizes == (4, 8)
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        bench.SuiteOptions(repeats=0)
    with pytest.raises(ValueError, match="sizes must be positive"):
        bench.SuiteOptions(sizes=[0])


def test_paused_gc_restores_the_collector():
    assert gc.isenabled()
    with bench.paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with bench.paused_gc(False):
        assert gc.isenabled()
    gc.disable()
    try:
        with bench.paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), bench.paused_gc():
        raise RuntimeError
    assert gc.isenabled()


def test_gc_meter_counts_collections_by_generation():
    with bench.GCMeter() as meter:
        gc.collect(0)
        gc.collect(2)
    assert meter.collections[0] >= 1 and meter.collections[2] >= 1
    assert meter.total == sum(meter.collections) and meter.seconds >= 0.0
    assert meter._callback not in gc.callbacks
    assert bench.gc_label(True) == "paused" and bench.gc_label(False) == "enabled"


def test_deep_getsizeof_counts_each_object_once():
    x = 1.5e300
    row = [x, x, x]
    assert bench.deep_getsizeof(row) == sys.getsizeof(row) + sys.getsizeof(x)
    nested = [row, row]  # the same row twice
    assert bench.deep_getsizeof(nested) == sys.getsizeof(nested) + bench.deep_getsizeof(
        row
    )
    cycle = []
    cycle.append(cycle)
    assert bench.deep_getsizeof(cycle) == sys.getsizeof(cycle)
    d = {"key": [1.25]}
    assert bench.deep_getsizeof(d) == sum(map(sys.getsizeof, (d, "key", d["key"], 1.25)))


def test_traced_allocations_sees_raw_and_boxed_storage():
    n = 10_000
    raw = bench.traced_allocations(lambda: array.array("d", bytes(8 * n)))
    # the object and its buffer (grown by 1/16); under pytest, a first traced run sometimes also
    # keeps one small block (56 bytes) that a plain interpreter does not: allow it
    assert 2 <= raw.blocks <= 3
    assert 0 <= raw.bytes - sys.getsizeof(array.array("d", bytes(8 * n))) <= 64
    boxed = bench.traced_allocations(lambda: [i + 0.5 for i in range(n)])
    assert (
        n + 2 <= boxed.blocks <= n + 8
    )  # a float object per element, the list, its item array
    assert abs(boxed.bytes - bench.deep_getsizeof([i + 0.5 for i in range(n)])) <= 256


def test_recorded_label_names_machine_and_day():
    result = {"machine": "m-2-cores", "hardware": {"date": "2026-11-30T10:00:00+00:00"}}
    assert bench.recorded_label(result) == "m-2-cores\n(recorded 2026-11-30)"


@pytest.mark.slow
def test_a_command_line_piped_into_head_exits_quietly():
    code = (
        "from microgpt_lib import bench\n"
        "bench.run_command_line(lambda: [print(i) for i in range(100000)])"
    )
    result = subprocess.run(
        f"{sys.executable} -c {shlex.quote(code)} | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["0", "1"]
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
