"""The timing harness, the peak, the provenance record, result files and the CLI."""

import json
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
    bench.measure(lambda: events.append("call"), warmup=1, repeats=2, sync=lambda: events.append("sync"))
    # warm-up, then (sync, call, sync) per sample: the clock never runs across unfinished work
    assert events == ["call", "sync", "sync", "call", "sync", "sync", "call", "sync"]


def test_measure_timing_is_plausible():
    t = bench.measure(lambda: time.sleep(0.01), warmup=0, repeats=3)
    assert 0.009 < t.median_s < 0.2


@pytest.mark.parametrize("kwargs, message", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")])
def test_measure_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.measure(lambda: None, **kwargs)


def test_flop_arithmetic():
    assert bench.matmul_flops(2, 3, 4) == 48
    assert bench.gflops(2e9, 2.0) == 1.0
    assert bench.percent_of_peak(25.0, 50.0) == 50.0


def test_measured_peak_is_positive_and_float32_is_faster():
    p64 = bench.measure_peak("float64", threads=1, seconds=0.02)
    p32 = bench.measure_peak("float32", threads=1, seconds=0.02)
    assert p64["source"] == "measured" and p64["dtype"] == "float64"
    assert p64["per_core_gflops"] > 1.0
    # twice as many float32 lanes per vector register; allow for noise on a shared machine
    assert p32["per_core_gflops"] > 1.2 * p64["per_core_gflops"]


def test_measure_peak_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="dtype"):
        bench.measure_peak("int8")


def test_hardware_record_has_the_provenance_fields():
    hw = bench.hardware_info()
    for key in ("date", "os", "python", "cpu", "blas", "numba", "torch"):
        assert key in hw, key
    assert hw["cpu"]["logical_cores"] >= 1
    assert hw["cpu"]["model"]
    assert hw["blas"]["numpy"] == np.__version__
    assert hw["blas"]["blas_name"]
    json.dumps(hw)  # must be storable as is


def test_cache_sizes_are_parsed():
    assert bench._parse_size("32K") == 32 * 1024
    assert bench._parse_size("1024K") == 1 << 20
    assert bench._parse_size("2 MiB") == 2 << 20
    assert bench._parse_size("nonsense") is None
    caches = bench.cpu_info()["caches"]
    assert all(isinstance(v, int) and v > 0 for v in caches.values())


def test_machine_name_is_file_safe():
    name = bench.machine_name({"cpu": {"model": "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", "logical_cores": 8}})
    assert name == "intel-core-i7-1185g7-8-cores"
    name = bench.machine_name({"cpu": {"model": "Apple M4 Max", "logical_cores": 16}, "gpu": "Apple GPU (Metal, arm64)"})
    assert name.startswith("apple-m4-max-16-cores-apple-gpu")


def _result():
    rows = [{"kernel": "numpy", "family": "blas", "n": 4, "dtype": "float64", "threads": 1,
             "median_s": 1e-6, "min_s": 9e-7, "max_s": 2e-6, "gflops": np.float64(0.128)}]
    return bench.make_result("matmul-intro", rows, command="test", hardware={"cpu": {"model": "X", "logical_cores": 1}})


def test_json_round_trip(tmp_path):
    path = bench.save_results(_result(), tmp_path / "r.json")
    again = bench.load_results(path)
    assert again["suite"] == "matmul-intro" and again["command"] == "test"
    assert again["rows"][0]["suite"] == "matmul-intro"
    assert again["rows"][0]["gflops"] == pytest.approx(0.128)  # numpy scalar stored as a number
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


@pytest.mark.parametrize("content, message", [("{", "not a valid result file"),
                                              ('{"suite": "x"}', "missing"),
                                              ('{"schema": 99, "suite": "x", "hardware": {}, "rows": [], "command": ""}', "schema")])
def test_load_results_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        bench.load_results(path)


def test_recorded_results_finds_files_by_suite(tmp_path):
    bench.save_results(_result(), bench.recorded_path("machine-a", "matmul-intro", tmp_path))
    bench.save_results(_result(), bench.recorded_path("machine-b", "matmul-intro", tmp_path))
    found = bench.recorded_results("matmul-intro", tmp_path)
    assert [r["path"].split("/")[-1] for r in found] == ["machine-a--matmul-intro.json", "machine-b--matmul-intro.json"]
    assert bench.recorded_results("peak", tmp_path) == []


def test_committed_results_are_valid():
    for path in sorted(bench.RESULTS_DIR.glob("*.json")):
        result = bench.load_results(path)
        machine, _, suite = path.stem.partition("--")
        assert result["suite"] == suite and result["machine"] == machine, path.name
        assert result["rows"], path.name
        assert result["command"].startswith("python -m microgpt_lib.bench"), path.name


def test_naive_matmul_matches_numpy_and_checks_shapes():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(bench.naive_matmul(a.tolist(), b.tolist()), a @ b, rtol=1e-12)
    with pytest.raises(ValueError, match="shapes do not match"):
        bench.naive_matmul(a.tolist(), a.tolist())


def test_cli_writes_a_result_file(tmp_path, capsys):
    out = tmp_path / "x.json"
    bench.main(["matmul-intro", "--sizes", "4", "8", "--repeats", "2", "--out", str(out)])
    result = bench.load_results(out)
    assert result["command"] == f"python -m microgpt_lib.bench matmul-intro --sizes 4 8 --repeats 2 --out {out}"
    assert {(r["kernel"], r["n"]) for r in result["rows"]} == {(k, n) for k in ("python-ijk", "numpy") for n in (4, 8)}
    for row in result["rows"]:
        for key in ("suite", "kernel", "family", "n", "dtype", "threads", "median_s", "min_s", "max_s", "gflops"):
            assert key in row, key
    assert "wrote" in capsys.readouterr().out


def test_cli_rejects_an_unknown_suite_listing_the_suites():
    with pytest.raises(SystemExit, match="unknown suite 'nope'; the suites are: .*matmul-intro.*peak"):
        bench.main(["nope"])


def test_every_registered_suite_resolves():
    for name in bench.SUITES:
        assert callable(bench.resolve_suite(name)), name


def test_result_files_are_readable_by_everyone(tmp_path):
    path = bench.save_results(_result(), tmp_path / "r.json")
    assert path.stat().st_mode & 0o044 == 0o044


def test_measure_interleaved_times_each_case():
    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1

    timings = bench.measure_interleaved({"a": lambda: bump("a"), "b": lambda: bump("b")}, repeats=3, min_time=0.001)
    assert set(timings) == {"a", "b"}
    for name, t in timings.items():
        assert t.repeats == 3 and len(t.times_s) == 3 and t.number >= 1
        assert t.min_s <= t.median_s <= t.max_s
        assert calls[name] >= 3 * t.number  # every sample ran the calibrated number of calls


def test_measure_interleaved_syncs_per_case():
    synced = []
    timings = bench.measure_interleaved({"plain": lambda: None, "synced": lambda: None}, repeats=2,
                                        syncs={"synced": lambda: synced.append(1)})
    assert set(timings) == {"plain", "synced"}
    assert len(synced) >= 2 * 3  # before and after each timed sample, and around the calibration run


def test_measure_interleaved_takes_turns_and_rejects_no_repeats():
    order = []
    bench.measure_interleaved({k: (lambda k=k: order.append(k)) for k in "ab"}, repeats=3)
    assert order[-6:] == ["a", "b", "a", "b", "a", "b"]  # one sample of each per round
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.measure_interleaved({}, repeats=0)


def test_cache_geometry_is_plausible_where_the_os_reports_it():
    geometry = bench.cache_geometry()
    assert set(geometry) == {"line_bytes", "sets", "ways"}
    if geometry["line_bytes"] is not None:
        assert geometry["line_bytes"] in (32, 64, 128, 256)
    l1 = bench.cpu_info()["caches"].get("L1d")
    if l1 and geometry["sets"] and geometry["ways"]:
        assert geometry["sets"] * geometry["ways"] * geometry["line_bytes"] == l1


def test_timing_from_samples():
    t = bench.Timing.from_times([3.0, 1.0, 2.0], number=4)
    assert (t.median_s, t.min_s, t.max_s, t.repeats, t.number) == (2.0, 1.0, 3.0, 3, 4)
    with pytest.raises(ValueError, match="no samples"):
        bench.Timing.from_times([])


def test_numba_threads_is_restored_and_checked():
    import numba

    before = numba.get_num_threads()
    with bench.numba_threads(1) as n:
        assert n == 1 == numba.get_num_threads()
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be an integer"):
        with bench.numba_threads(0):
            pass
