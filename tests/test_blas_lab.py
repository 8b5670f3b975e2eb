"""microgpt_lib.blas_lab: numpy's @ by size, threads, layout and call count; the blas suite."""

import json

import numpy as np
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
    kinds = {r.get("kind") or r["family"] for r in rows}
    assert kinds == {"peak", "sweep", "layout", "call-overhead", "dispatch", "tokens"}
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


# --------------------------------------------------------------------------------------------
# the yardstick, threads, the cost of a call


@needs_threadpoolctl
def test_threads_used_follows_the_thread_limit():
    with machine.limit_blas_threads(1):
        assert blas_lab.threads_used(256, settle_s=0.05) == 1
    if (machine.blas_threads() or 1) > 1:  # a big product is split, a tiny one is not
        assert blas_lab.threads_used(512) >= 2
        assert blas_lab.threads_used(8) == 1


def test_layout_rows_time_the_copy_of_the_strided_view():
    rows = {r["layout"]: r for r in blas_lab.layout_rows(64, repeats=1)}
    assert rows["strided @ b"]["copy_s"] > 0
    assert "copy_s" not in rows["a @ b"]


def test_blas_dgemm_computes_the_product():
    loop = blas_lab._dgemm_loop()
    if blas.blas_library() == "openblas":  # numpy's wheels: the symbol must be found
        assert loop is not None
    if loop is None:
        pytest.skip("no cblas_dgemm found in numpy's BLAS")
    a, b = blas_lab.operands(5, "float64")
    out = np.empty((5, 5))
    loop(a, b, out, 2)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_dispatch_rows():
    rows = blas_lab.dispatch_rows([4], repeats=1)
    methods = {r["method"]: r for r in rows}
    assert {"numpy a @ b", "numpy np.add"} <= set(methods)
    assert all(r["per_call_s"] > 0 and r["n"] == 4 for r in rows)
    if "BLAS alone" in methods:  # hundreds of ns of numpy dispatch vs tens for the BLAS
        assert methods["BLAS alone"]["per_call_s"] < methods["numpy a @ b"]["per_call_s"]


def test_token_rows_one_product_beats_a_matvec_per_token():
    rows = {r["method"]: r for r in blas_lab.token_rows(16, [256], repeats=3)}
    assert rows["one matvec per token"]["tokens"] == 256
    assert (
        rows["all tokens at once"]["per_token_s"] * 3
        < rows["one matvec per token"]["per_token_s"]
    )


# --------------------------------------------------------------------------------------------
# exercises


needs_threads = pytest.mark.skipif(
    not CONTROLLED or (machine.blas_threads() or 1) < 2,
    reason="needs a BLAS that threadpoolctl sees, running more than one thread",
)


@needs_threads
def test_check_thread_threshold_accepts_the_reference_and_rejects_wrong_answers():
    answer = blas_lab.reference_thread_threshold()
    assert answer is not None
    assert "right" in blas_lab.check_thread_threshold(answer)
    with pytest.raises(AssertionError, match="still ran on one thread"):
        blas_lab.check_thread_threshold(max(2, answer // 2))  # too small
    with pytest.raises(AssertionError, match="already ran on"):
        blas_lab.check_thread_threshold(4 * answer)  # too large: threads long before
    with pytest.raises(AssertionError, match="matrix size"):
        blas_lab.check_thread_threshold(1.5)


def test_check_thread_threshold_on_one_thread(monkeypatch):
    monkeypatch.setattr(machine, "blas_threads", lambda: 1)
    assert "nothing to find" in blas_lab.check_thread_threshold(100)


def test_reference_mlp_all_tokens_matches_the_loop():
    rng = np.random.default_rng(1)
    x, w1, w2 = (rng.standard_normal(s) for s in [(5, 8), (32, 8), (8, 32)])
    np.testing.assert_allclose(
        blas_lab.reference_mlp_all_tokens(x, w1, w2), blas_lab.mlp_per_token(x, w1, w2)
    )


def test_check_mlp_all_tokens():
    assert "right" in blas_lab.check_mlp_all_tokens(blas_lab.reference_mlp_all_tokens)
    with pytest.raises(
        AssertionError, match="raised ValueError"
    ):  # forgot the transposes
        blas_lab.check_mlp_all_tokens(lambda x, w1, w2: np.maximum(x @ w1, 0) @ w2)
    with pytest.raises(AssertionError, match="where the ReLU goes"):  # ReLU at the end
        blas_lab.check_mlp_all_tokens(lambda x, w1, w2: np.maximum(x @ w1.T @ w2.T, 0))
    with pytest.raises(AssertionError, match="one call per layer"):  # right, but a loop
        blas_lab.check_mlp_all_tokens(blas_lab.mlp_per_token)
