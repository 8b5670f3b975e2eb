"""microgpt_lib.blas_lab: numpy's @ by size, threads, layout and call count; the blas suite."""

import json

import pytest

from microgpt_lib import bench, blas, blas_lab, machine

CONTROLLED = bool(machine.blas_pools())
needs_threadpoolctl = pytest.mark.skipif(
    not CONTROLLED, reason="threadpoolctl cannot see this BLAS (Accelerate)"
)


def test_matmul_rows():
    rows = blas_lab.matmul_rows([8, 16], ["float32"], repeats=2)
    assert [r["n"] for r in rows] == [8, 16]
    for row in rows:
        assert set(bench.MATMUL_COLUMNS) <= set(row)
        assert row["family"] == "blas" and row["dtype"] == "float32" and row["gflops"] > 0
    with pytest.raises(ValueError, match="float64, float32; got 'bfloat16'"):
        blas_lab.matmul_rows([8], ["bfloat16"])
    with pytest.raises(ValueError, match="positive integers"):
        blas_lab.matmul_rows([0])


def test_thread_sweep_in_a_child_process():
    rows = blas_lab.thread_sweep([8], ["float64"], [1], repeats=1, isolate=True)
    assert (
        len(rows) == 1
        and rows[0]["threads"] == 1
        and rows[0]["threads_set_by"] == "environment"
    )


@needs_threadpoolctl
def test_thread_sweep_in_process():
    rows = blas_lab.thread_sweep([8], ["float64"], [1], repeats=1)
    assert rows[0]["threads"] == 1 and rows[0]["threads_set_by"] == "threadpoolctl"


def test_layout_rows_cover_each_layout():
    rows = blas_lab.layout_rows(32, repeats=1)
    assert [r["layout"] for r in rows] == ["a @ b", "a.T @ b", "a.T @ b.T", "strided @ b"]


def test_stacked_call_beats_a_python_loop_for_tiny_products():
    rows = {
        r["method"]: r for r in blas_lab.call_overhead_rows([4], batch=200, repeats=3)
    }
    assert rows["python loop"]["batch"] == rows["stacked"]["batch"] == 200
    # hundreds of Python-to-C crossings vs one: an order of magnitude even on a busy machine
    assert rows["stacked"]["per_product_s"] * 5 < rows["python loop"]["per_product_s"]


@pytest.mark.slow
def test_blas_suite_rows(tmp_path, suite_options):
    rows = blas_lab.suite_blas(suite_options(dtypes=["float64"]))
    kinds = {r.get("kind", r["family"]) for r in rows}
    assert kinds == {"peak", "sweep", "layout", "call-overhead"}
    sweep = [r for r in rows if r.get("kind") == "sweep"]
    assert {r["threads"] for r in sweep} >= {1}
    assert all(
        r["percent_of_peak"] > 0 and r["library"] == blas.blas_library() for r in sweep
    )
    result = bench.make_result("blas", rows, command="test", machine="m", hardware={})
    assert json.dumps(
        bench.load_results(bench.save_results(result, tmp_path / "blas.json"))["rows"]
    )
    with pytest.raises(ValueError, match="got 'float16'"):
        blas_lab.suite_blas(suite_options(dtypes=["float16"]))
