"""This machine: peaks, caches, provenance, threads and settings."""

import json

import numba
import numpy as np
import pytest

from microgpt_lib import machine


def test_measured_peak_is_positive_and_float32_is_faster():
    p64 = machine.measure_peak("float64", threads=1, seconds=0.02)
    p32 = machine.measure_peak("float32", threads=1, seconds=0.02)
    assert p64["source"] == "measured" and p64["dtype"] == "float64"
    assert p64["per_core_gflops"] > 1.0
    # twice as many float32 lanes per vector register; allow for noise on a shared machine
    assert p32["per_core_gflops"] > 1.2 * p64["per_core_gflops"]


def test_measure_peak_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="dtype"):
        machine.measure_peak("int8")


def test_hardware_record_has_the_provenance_fields():
    hw = machine.hardware_info()
    for key in ("date", "os", "python", "cpu", "blas", "numba", "torch"):
        assert key in hw, key
    assert hw["cpu"]["logical_cores"] >= 1
    assert hw["cpu"]["model"]
    assert hw["blas"]["numpy"] == np.__version__
    assert hw["blas"]["blas_name"]
    json.dumps(hw)  # must be storable as is


def test_cache_sizes_are_parsed():
    assert machine._parse_size("32K") == 32 * 1024
    assert machine._parse_size("1024K") == 1 << 20
    assert machine._parse_size("2 MiB") == 2 << 20
    assert machine._parse_size("nonsense") is None
    caches = machine.cpu_info()["caches"]
    assert all(isinstance(v, int) and v > 0 for v in caches.values())


def test_machine_name_is_file_safe():
    name = machine.machine_name(
        {"cpu": {"model": "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", "logical_cores": 8}}
    )
    assert name == "intel-core-i7-1185g7-8-cores"
    name = machine.machine_name(
        {
            "cpu": {"model": "Apple M4 Max", "logical_cores": 16},
            "gpu": "Apple GPU (Metal, arm64)",
        }
    )
    assert name.startswith("apple-m4-max-16-cores-apple-gpu")


def test_cache_geometry_is_plausible_where_the_os_reports_it():
    geometry = machine.cache_geometry()
    assert set(geometry) == {"line_bytes", "sets", "ways"}
    if geometry["line_bytes"] is not None:
        assert geometry["line_bytes"] in (32, 64, 128, 256)
    l1 = machine.cpu_info()["caches"].get("L1d")
    if l1 and geometry["sets"] and geometry["ways"]:
        assert geometry["sets"] * geometry["ways"] * geometry["line_bytes"] == l1


def test_numba_threads_is_restored_and_checked():

    before = numba.get_num_threads()
    with machine.numba_threads(1) as n:
        assert n == 1 == numba.get_num_threads()
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be an integer"):
        with machine.numba_threads(0):
            pass


def test_limit_blas_threads_sets_and_restores():
    before = machine.blas_threads()
    if before is None:
        pytest.skip("threadpoolctl cannot see this BLAS")
    with machine.limit_blas_threads(1):
        assert machine.blas_threads() == 1
    assert machine.blas_threads() == before
    with machine.limit_blas_threads(None):
        assert machine.blas_threads() == before
    with pytest.raises(ValueError, match="positive integer"):
        machine.limit_blas_threads(0)


def test_limit_blas_threads_where_threadpoolctl_is_blind(monkeypatch):
    monkeypatch.setattr(machine, "blas_pools", lambda info=None: [])
    with machine.limit_blas_threads(1):  # nothing to set: a no-op
        pass
    with pytest.raises(RuntimeError, match="cannot see numpy's BLAS"):
        machine.limit_blas_threads(1, strict=True)


def test_blas_pools_of_a_stored_record():
    info = {
        "threadpools": [{"user_api": "blas", "num_threads": 4}, {"user_api": "openmp"}]
    }
    assert machine.blas_pools(info) == [{"user_api": "blas", "num_threads": 4}]


def test_thread_counts_double_up_to_the_limit():
    assert machine.thread_counts(1) == [1]
    assert machine.thread_counts(2) == [1, 2]
    assert machine.thread_counts(6) == [1, 2, 4, 6]
    assert machine.thread_counts(8) == [1, 2, 4, 8]


def test_settings_are_declared_in_one_place(monkeypatch):
    monkeypatch.setenv("MICROGPT_DEVICE", " cpu ")
    assert machine.setting("MICROGPT_DEVICE") == "cpu"
    monkeypatch.delenv("MICROGPT_DEVICE")
    assert machine.setting("MICROGPT_DEVICE") == "auto"
    with pytest.raises(KeyError, match="not a setting of the course"):
        machine.setting("MICROGPT_NOPE")


def test_no_module_reads_a_setting_behind_machines_back():
    from pathlib import Path

    for path in Path(machine.__file__).parent.glob("*.py"):
        if path.name != "machine.py":
            assert 'os.environ.get("MICROGPT' not in path.read_text(), path.name


def test_scalar_peak_and_bandwidth_are_measured():
    scalar = machine.measure_scalar_peak(seconds=0.02)
    assert scalar["gflops"] > 0.1 and scalar["source"] == "measured"
    bandwidth = machine.measure_bandwidth(megabytes=16, repeats=2)
    assert bandwidth["gbytes_per_s"] > 0.1 and bandwidth["bytes"] == 16 * 2**20
    with pytest.raises(ValueError, match="megabytes"):
        machine.measure_bandwidth(megabytes=0)


def test_the_fma_loop_reports_a_register_width():
    import platform

    bits = machine.fma_vector_bits("float64")
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert bits in (128, 256, 512)
    with pytest.raises(ValueError, match="dtype"):
        machine.fma_vector_bits("int8")


@pytest.mark.slow
def test_the_peak_uses_the_widest_vectors():
    peak = machine.measure_peak("float64", threads=1, seconds=0.02)
    default = machine.measure_peak("float64", threads=1, seconds=0.02, widest=False)
    assert default["vector_bits"] == machine.fma_vector_bits("float64")
    if machine.widest_vector_features() and default["vector_bits"] < 512:
        # measured in a fresh Python compiled for 512-bit vectors: twice the lanes
        assert (
            peak["vector_bits"] == 512
            and peak["default_vector_bits"] == default["vector_bits"]
        )
        assert peak["per_core_gflops"] > 1.2 * default["per_core_gflops"]
    else:
        assert "default_width_gflops" not in peak
