"""microgpt_lib.kernels_lab: strides, assembly, the ladder and the matmul suite."""

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
