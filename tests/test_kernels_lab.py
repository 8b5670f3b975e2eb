"""microgpt_lib.kernels_lab: strides, assembly, the ladder, the matmul suite and the exercises."""

import numba
import numpy as np
import pytest

from microgpt_lib import kernels, kernels_lab, machine
from microgpt_lib.kernels import KERNELS


def test_misses_per_iteration_ranks_the_orders():
    misses = {
        order: kernels_lab.misses_per_iteration(order)["total"]
        for order in kernels.LOOP_ORDERS
    }
    assert misses == {
        "ijk": 1.125,
        "jik": 1.125,
        "ikj": 0.25,
        "kij": 0.25,
        "jki": 2.0,
        "kji": 2.0,
    }
    assert kernels_lab.misses_per_iteration("ikj") == {
        "A": 0.0,
        "B": 0.125,
        "C": 0.125,
        "total": 0.25,
    }


def test_access_trace_shows_the_strides():
    trace = kernels_lab.access_trace("ikj", n=5, steps=7)
    assert (
        trace["B"] == [0, 1, 2, 3, 4, 5, 6]
        and trace["C"] == [0, 1, 2, 3, 4, 0, 1]
        and trace["A"] == [0] * 5 + [1, 1]
    )
    assert kernels_lab.access_trace("ijk", n=5, steps=3)["B"] == [0, 5, 10]
    assert kernels_lab.access_trace("jki", n=5, steps=3)["A"] == [0, 5, 10]
    assert machine.cache_line_bytes() in (32, 64, 128, 256)


def test_count_float_ops_reads_x86_and_arm_assembly():
    x86 = """
        vfmadd231pd %zmm1, %zmm2, %zmm3
        vfmadd231pd (%rax), %ymm2, %ymm3
        vmulpd %xmm1, %xmm2, %xmm3
        vfmadd213sd %xmm1, %xmm2, %xmm3
        vaddsd %xmm0, %xmm1, %xmm1
        vmovupd %zmm0, (%rdi)
    """
    assert kernels_lab.count_float_ops(x86 + "vmovupd %ymm3, -72(%rsp)") == {
        "vector_ops": {128: 1, 256: 1, 512: 1},
        "scalar_ops": 2,
        "fma_ops": 3,
        "widest_bits": 512,
        "vectorized": True,
        "spills": 1,
    }
    arm = (
        "fmla v0.2d, v1.2d, v2.2d\n fmadd d0, d1, d2, d3\n fadd d1, d1, d2\n ldr q0, [x0]"
    )
    assert kernels_lab.count_float_ops(arm) == {
        "vector_ops": {128: 1, 256: 0, 512: 0},
        "scalar_ops": 2,
        "fma_ops": 2,
        "widest_bits": 128,
        "vectorized": True,
        "spills": 0,
    }


def test_fastmath_is_what_vectorizes_the_micro_kernel():
    args = kernels_lab.micro_kernel_arguments()
    simd = kernels_lab.vectorization_report(kernels.micro_kernel_simd, *args)
    scalar = kernels_lab.vectorization_report(kernels.micro_kernel_scalar, *args)
    assert simd["vectorized"] and simd["fma_ops"] > 0
    assert not scalar["vectorized"] and scalar["scalar_ops"] >= 16
    with pytest.raises(TypeError, match="numba.njit function"):
        kernels_lab.assembly(np.matmul)


def test_run_ladder_rows():
    rows = kernels_lab.run_ladder(
        ["python-ikj", "numba-ikj", "numba-packed-parallel", "numpy"],
        [8, 24],
        repeats=2,
        python_max_n=8,
        progress=False,
    )
    assert [(r["kernel"], r["n"]) for r in rows] == [
        ("python-ikj", 8),
        ("numba-ikj", 8),
        ("numba-packed-parallel", 8),
        ("numpy", 8),
        ("numba-ikj", 24),
        ("numba-packed-parallel", 24),
        ("numpy", 24),
    ]
    for row in rows:
        assert row["gflops"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["threads"] == (
            1
            if row["family"] == "numba" and "parallel" not in row["kernel"]
            else row["threads"]
        )
    with pytest.raises(ValueError, match="dtype must be"):
        kernels_lab.run_ladder(["numpy"], [8], "int8")
    with pytest.raises(ValueError, match="sizes must be positive"):
        kernels_lab.run_ladder(["numpy"], [0])


def test_add_ratio_to_blas_uses_numpy_on_the_most_threads():
    rows = [
        {"kernel": "numpy", "n": 8, "dtype": "float64", "threads": 1, "gflops": 10.0},
        {"kernel": "numpy", "n": 8, "dtype": "float64", "threads": 2, "gflops": 20.0},
        {"kernel": "numba-ikj", "n": 8, "dtype": "float64", "threads": 1, "gflops": 5.0},
        {"kernel": "numba-ikj", "n": 16, "dtype": "float64", "threads": 1, "gflops": 5.0},
    ]
    out = kernels_lab.add_ratio_to_blas(rows)
    assert out[2]["ratio_to_blas"] == 0.25 and out[1]["ratio_to_blas"] == 1.0
    assert "ratio_to_blas" not in out[3]


@pytest.mark.slow
def test_suite_rows(suite_options):
    rows = kernels_lab.suite_matmul(suite_options(sizes=[8], dtypes=["float32"]))
    timed = [r for r in rows if r["family"] in ("python", "numba", "blas")]
    assert {r["kernel"] for r in timed} == set(KERNELS)
    assert all(
        "ratio_to_blas" in r and "percent_of_peak" in r and r["dtype"] == "float32"
        for r in timed
    )
    assert any(r["family"] == "peak" for r in rows) and any(
        r["family"] == "memory" for r in rows
    )
    with pytest.raises(ValueError, match="dtype must be one of float64, float32"):
        kernels_lab.suite_matmul(suite_options(dtypes=["bfloat16"]))


def test_spin_trap_and_the_scalar_peak_loop():
    trap = kernels_lab.blas_spin_trap("numba-ikj-parallel", n=32, repeats=3)
    assert set(trap) == {"alone_s", "after_blas_s", "after_blas_limited_s"} and all(
        v > 0 for v in trap.values()
    )
    report = kernels_lab.vectorization_report(machine.scalar_fma_chains, 10, 1.0, 1.0)
    assert not report["vectorized"] and report["fma_ops"] >= 16


def test_misses_with_b_transposed_and_the_sizes_that_fill_a_cache():
    lines = {
        order: kernels_lab.misses_per_iteration(order, transposed_b=True)["total"]
        for order in kernels.LOOP_ORDERS
    }
    assert lines == kernels_lab.REFERENCE_TRANSPOSED_LINES
    assert kernels_lab.n_filling(3 * 8 * 100**2) == pytest.approx(100)
    assert kernels_lab.n_past(32 << 20) == 1536  # 1.5 x 32 MiB: N = 1448, up to 512s
    sizes = kernels_lab.default_sizes({"L1d": 1, "L2": 1, "L3": 480 << 20})
    assert sizes[-1] == 5632 and 384 in sizes and 2048 in sizes and sizes == sorted(sizes)


X86_LOOPS = """
f:
    vxorpd %xmm0, %xmm0, %xmm0
.LBB0_2:
    vmulpd (%rax), %ymm1, %ymm2
    vfmadd231pd (%rbx), %ymm1, %ymm3
    addq $32, %rax
    jne .LBB0_2
.LBB0_3:
    vmulsd (%rax), %xmm1, %xmm2
    jne .LBB0_3
    vaddpd %xmm0, %xmm1, %xmm1
    retq
"""


def test_innermost_loops_and_the_hot_loop():
    loops = kernels_lab.innermost_loops(X86_LOOPS)
    assert len(loops) == 2 and "vfmadd231pd" in loops[0] and "vmulsd" in loops[1]
    hot = kernels_lab.hot_loop(X86_LOOPS)
    assert hot["multiply_adds_per_trip"] == 8 and hot["widest_bits"] == 256
    assert (
        hot["elsewhere"]["vector_ops"][128] == 1 and hot["elsewhere"]["scalar_ops"] == 1
    )
    arm = "LBB0_1:\n    fmla v0.2d, v1.2d, v2.2d\n    fmadd d0, d1, d2, d3\n    b.ne LBB0_1\n"
    assert kernels_lab.hot_loop(arm)["multiply_adds_per_trip"] == 3
    # compiled code: ikj's main loop multiplies several numbers per trip
    m = np.ones((8, 8))
    asm = kernels_lab.assembly(kernels.COMPILED_LOOP_ORDERS["ikj"], m, m, m)
    assert kernels_lab.hot_loop(asm)["multiply_adds_per_trip"] > 1


def test_the_outer_product_kernel_needs_the_slp_vectorizer():
    args = kernels_lab.outer_kernel_arguments()
    without = kernels_lab.vectorization_report(kernels.outer_micro_kernel, *args)
    assert not without["vectorized"] and without["fma_ops"] >= 64
    if "avx512f" not in machine.cpu_info().get("simd", []):
        pytest.skip("the SLP vectorizer's choice here is checked on AVX-512 CPUs")
    report = kernels_lab.vectorization_report(kernels.outer_micro_kernel, *args, slp=True)
    assert report["vectorized"] and report["scalar_ops"] == 0


@pytest.mark.slow
def test_report_for_another_cpu_and_the_micro_kernel_rates():
    report = kernels_lab.report_for_cpu("dot")
    if machine.cpu_info()["machine"] in ("x86_64", "AMD64"):
        assert report["widest_bits"] <= 256 and set(report["vector_ops"]) == {
            128,
            256,
            512,
        }
    with pytest.raises(ValueError, match="'dot' or 'outer'"):
        kernels_lab.report_for_cpu("inner")
    assert kernels_lab.micro_kernel_rate("dot", repeats=2, seconds=0.005) > 0
    assert kernels_lab.micro_kernel_rate("outer", repeats=2, seconds=0.005) > 0


def test_interleaved_rows_and_the_crossover():
    rows = kernels_lab.interleaved_rows(
        ["numba-ikj", ("numba-ikj-parallel", 1), "numpy"], [8, 16], repeats=3
    )
    assert [(r["kernel"], r["n"], r["threads"]) for r in rows] == [
        ("numba-ikj", 8, 1),
        ("numba-ikj-parallel", 8, 1),
        ("numpy", 8, 1),
        ("numba-ikj", 16, 1),
        ("numba-ikj-parallel", 16, 1),
        ("numpy", 16, 1),
    ]
    assert all(len(r["times_s"]) == 3 and r["gflops"] > 0 for r in rows)
    with pytest.raises(ValueError, match="numpy on one thread only"):
        kernels_lab.interleaved_rows([("numpy", 2)], [8])
    # made-up times: "fast" is ahead from N = 32 on in rounds 0 and 1, never in round 2
    times = {8: [1, 1, 1], 16: [1, 3, 1], 32: [1, 1, 1], 64: [1, 1, 3]}
    made_up = [{"kernel": "slow", "n": n, "times_s": [2.0] * 3} for n in times] + [
        {"kernel": "fast", "n": n, "times_s": [t * 1.5 for t in ts]}
        for n, ts in times.items()
    ]
    assert kernels_lab.crossover(made_up, "fast", "slow") == {
        "per_round": [8, 32, None],
        "median": 8,
        "low": 8,
        "high": 32,
        "never": 1,
    }
    with pytest.raises(ValueError, match="no sizes with both"):
        kernels_lab.crossover(made_up, "fast", "other")


# --------------------------------------------------------------------------------------------
# the exercises: each checker passes the reference solution and fails a plausible wrong one


def test_check_ranking():
    assert "holds at N = 300" in kernels_lab.check_ranking(kernels_lab.REFERENCE_RANKING)
    with pytest.raises(AssertionError, match="you ranked jki .* above"):
        kernels_lab.check_ranking(["jki", "kji", "ijk", "jik", "ikj", "kij"])
    with pytest.raises(AssertionError, match="each of the six orders once"):
        kernels_lab.check_ranking(["ikj", "ikj", "ijk", "jik", "jki", "kji"])


def test_check_transposed_lines():
    assert "right" in kernels_lab.check_transposed_lines(
        kernels_lab.REFERENCE_TRANSPOSED_LINES
    )
    untransposed = {
        order: kernels_lab.misses_per_iteration(order)["total"]
        for order in kernels.LOOP_ORDERS
    }
    with pytest.raises(AssertionError, match="ijk: you have 1.125 lines per step"):
        kernels_lab.check_transposed_lines(untransposed)
    with pytest.raises(AssertionError, match="one entry per order"):
        kernels_lab.check_transposed_lines({"ijk": 0.25})


@numba.njit(fastmath={"contract"})
def rows_swapped_4x8(a_sliver, b_sliver, c, i, j):
    # a plausible slip: rows 0 and 1 of the tile both take a_sliver[p, 0]
    c0, c1 = kernels.load_row(c, i, j), kernels.load_row(c, i + 1, j)
    c2, c3 = kernels.load_row(c, i + 2, j), kernels.load_row(c, i + 3, j)
    for p in range(a_sliver.shape[0]):
        x, y = a_sliver[p], b_sliver[p]
        c0, c1 = kernels.axpy_row(c0, x[0], y), kernels.axpy_row(c1, x[0], y)
        c2, c3 = kernels.axpy_row(c2, x[2], y), kernels.axpy_row(c3, x[3], y)
    for r, row in enumerate((c0, c1, c2, c3)):
        kernels.store_row(c, i + r, j, row)


@numba.njit(fastmath={"contract"})
def one_sum_at_a_time_4x8(a_sliver, b_sliver, c, i, j):
    # correct, but 32 dot products one after another: nothing for SIMD, one sum in flight
    for r in range(4):
        for q in range(8):
            s = c[i + r, j + q]
            for p in range(a_sliver.shape[0]):
                s += a_sliver[p, r] * b_sliver[p, q]
            c[i + r, j + q] = s


def test_check_micro_kernel():
    message = kernels_lab.check_micro_kernel(kernels_lab.reference_micro_kernel_4x8)
    assert message.startswith("correct")
    with pytest.raises(AssertionError, match="wrong product"):
        kernels_lab.check_micro_kernel(rows_swapped_4x8)
    reordering = numba.njit(fastmath=True)(kernels_lab.reference_micro_kernel_4x8.py_func)
    with pytest.raises(AssertionError, match="reorder the sums"):
        kernels_lab.check_micro_kernel(reordering)
    with pytest.raises(AssertionError, match="must be a numba function"):
        kernels_lab.check_micro_kernel(lambda *args: None)
    if "speed is not checked" in message:
        pytest.skip("this machine's compiler does not vectorize outer-product kernels")
    with pytest.raises(AssertionError, match="not clearly faster"):
        kernels_lab.check_micro_kernel(one_sum_at_a_time_4x8)


def test_check_dispatch():
    assert "right side of the crossover" in kernels_lab.check_dispatch(
        kernels_lab.reference_dispatch
    )
    always_parallel = kernels.KERNELS[kernels.BEST_KERNEL]
    with pytest.raises(AssertionError, match="at N = 16 .* stay on one thread"):
        kernels_lab.check_dispatch(always_parallel)
    with pytest.raises(AssertionError, match="wrong product"):
        kernels_lab.check_dispatch(
            lambda a, b: a @ b.T if a.shape == b.shape else a @ b + 1
        )


def test_a_signed_index_from_an_unknown_start_stops_the_vectorizer():
    reports = kernels_lab.index_reports()
    assert list(reports) == list(kernels_lab.INDEX_LOOPS)
    vectorized = {name: r["vectorized"] for name, r in reports.items()}
    assert vectorized == {
        "range(j0, j1)": False,
        "range(j1 - j0)": True,
        "range(uint64(j0), uint64(j1))": True,
    }
