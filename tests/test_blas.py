"""microgpt_lib.blas: which BLAS, its threads, the measurements and the blas suite's rows."""

import argparse
import json
import os

import numpy as np
import pytest

from microgpt_lib import bench, blas

CONTROLLED = bool(blas._blas_pools())
needs_threadpoolctl = pytest.mark.skipif(not CONTROLLED, reason="threadpoolctl cannot see this BLAS (Accelerate)")


@pytest.mark.parametrize("name, family", [
    ("scipy-openblas", "openblas"), ("openblas64", "openblas"), ("OpenBLAS", "openblas"),
    ("accelerate", "accelerate"), ("vecLib", "accelerate"), ("mkl-sdl", "mkl"), ("mkl-dynamic-lp64-iomp", "mkl"),
    ("blis", "blis"), ("cblas", "cblas"), (None, "unknown"), ("", "unknown"),
])
def test_parse_blas_name(name, family):
    assert blas.parse_blas_name(name) == family


def test_blas_library_on_this_machine():
    built_with = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    assert blas.blas_library() == blas.parse_blas_name(built_with)
    assert blas.blas_library() in ("openblas", "accelerate", "mkl", "blis")


def test_blas_library_falls_back_to_the_running_pool():
    info = {"blas_name": "unknown (AttributeError)",
            "threadpools": [{"user_api": "blas", "internal_api": "mkl", "num_threads": 4}]}
    assert blas.blas_library(info) == "mkl"
    assert blas.blas_library({"blas_name": None, "threadpools": []}) == "unknown"


def test_describe_blas():
    info = blas.describe_blas()
    assert info["library"] == blas.blas_library()
    assert info["numpy"] == np.__version__
    assert info["thread_env_var"] == blas.THREAD_ENV_VARS.get(info["library"])
    assert info["threadpoolctl_controls_it"] == CONTROLLED
    if CONTROLLED:
        assert info["threads"] >= 1


@needs_threadpoolctl
def test_limit_blas_threads_sets_and_restores():
    before = blas.blas_threads()
    with blas.limit_blas_threads(1) as inside:
        assert inside == 1 and blas.blas_threads() == 1
    assert blas.blas_threads() == before
    with blas.limit_blas_threads(None) as unchanged:
        assert unchanged == before


def test_limit_blas_threads_errors(monkeypatch):
    with pytest.raises(ValueError, match="positive integer"):
        with blas.limit_blas_threads(0):
            pass
    monkeypatch.setattr(blas, "_blas_pools", lambda: [])  # as with Accelerate
    with pytest.raises(RuntimeError, match="threadpoolctl cannot see"):
        with blas.limit_blas_threads(1):
            pass


def test_thread_env():
    env = blas.thread_env(3)
    assert env["OPENBLAS_NUM_THREADS"] == env["VECLIB_MAXIMUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="positive integer"):
        blas.thread_env(0)


def test_run_python_passes_the_environment():
    out = blas.run_python("import os; print(os.environ['VECLIB_MAXIMUM_THREADS'])", env=blas.thread_env(1))
    assert out.strip() == "1"
    with pytest.raises(RuntimeError, match="child Python failed"):
        blas.run_python("raise SystemExit(3)")


@needs_threadpoolctl
def test_environment_fixes_threads_in_a_fresh_interpreter():
    code = "import numpy; from microgpt_lib import blas; print(blas.blas_threads())"
    assert blas.run_python(code, env=blas.thread_env(1)).strip() == "1"


def test_matmul_rows():
    rows = blas.matmul_rows([8, 16], ["float32"], repeats=2)
    assert [r["n"] for r in rows] == [8, 16]
    for row in rows:
        assert {"kernel", "family", "n", "dtype", "threads", "median_s", "min_s", "max_s", "gflops"} <= set(row)
        assert row["family"] == "blas" and row["dtype"] == "float32" and row["gflops"] > 0
    with pytest.raises(ValueError, match="float64, float32; got bfloat16"):
        blas.matmul_rows([8], ["bfloat16"])
    with pytest.raises(ValueError, match="positive integers"):
        blas.matmul_rows([0])


def test_thread_sweep_in_a_child_process():
    rows = blas.thread_sweep([8], ["float64"], [1], repeats=1, isolate=True)
    assert len(rows) == 1 and rows[0]["threads"] == 1 and rows[0]["threads_set_by"] == "environment"


@needs_threadpoolctl
def test_thread_sweep_in_process():
    rows = blas.thread_sweep([8], ["float64"], [1], repeats=1)
    assert rows[0]["threads"] == 1 and rows[0]["threads_set_by"] == "threadpoolctl"


def test_layout_rows_cover_each_layout():
    rows = blas.layout_rows(32, repeats=1)
    assert [r["layout"] for r in rows] == ["a @ b", "a.T @ b", "a.T @ b.T", "strided @ b"]


def test_stacked_call_beats_a_python_loop_for_tiny_products():
    rows = {r["method"]: r for r in blas.call_overhead_rows([4], batch=200, repeats=3)}
    assert rows["python loop"]["batch"] == rows["stacked"]["batch"] == 200
    # hundreds of Python-to-C crossings vs one: an order of magnitude even on a busy machine
    assert rows["stacked"]["per_product_s"] * 5 < rows["python loop"]["per_product_s"]


def test_with_percent_of_peak():
    peaks = {"float64": {"per_core_gflops": 50.0, "gflops": 90.0, "threads": 2}}
    rows = [{"dtype": "float64", "threads": 1, "gflops": 25.0}, {"dtype": "float64", "threads": 2, "gflops": 45.0},
            {"dtype": "float64", "threads": 4, "gflops": 100.0}, {"dtype": "float32", "threads": 1, "gflops": 1.0}]
    out = blas.with_percent_of_peak(rows, peaks)
    assert [r.get("percent_of_peak") for r in out] == [50.0, 50.0, 50.0, None]


def test_blas_suite_rows(tmp_path):
    options = argparse.Namespace(**{**vars(bench.build_parser().parse_args(["blas", "--quick"])), "dtypes": ["float64"]})
    rows = blas.suite_blas(options)
    experiments = {r.get("experiment", r["family"]) for r in rows}
    assert experiments == {"peak", "sweep", "layout", "call-overhead"}
    sweep = [r for r in rows if r.get("experiment") == "sweep"]
    assert {r["threads"] for r in sweep} >= {1}
    assert all(r["percent_of_peak"] > 0 and r["library"] == blas.blas_library() for r in sweep)
    path = bench.save_results(bench.make_result("blas", rows, command="test"), tmp_path / "blas.json")
    assert json.dumps(bench.load_results(path)["rows"])
    with pytest.raises(ValueError, match="got float16"):
        blas.suite_blas(argparse.Namespace(**{**vars(options), "dtypes": ["float16"]}))


def test_registered_suites():
    assert bench.resolve_suite("blas") is blas.suite_blas
    from microgpt_lib import device

    assert bench.resolve_suite("gpu") is device.suite_gpu
