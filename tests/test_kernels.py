"""Every matmul kernel against numpy.matmul, the validation, the tile sizes and the ladder."""

import argparse

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from microgpt_lib import bench, kernels
from microgpt_lib.kernels import KERNELS, Tiles

# non-square, and none a multiple of the 4x4 register tile or of the small tiles used below
SHAPES = [(1, 1, 1), (4, 4, 4), (7, 5, 3), (13, 17, 11), (33, 70, 9), (66, 41, 130)]
SMALL_TILES = Tiles(mc=8, kc=16, nc=8)  # several blocks in every dimension at these shapes


def operands(m, k, n, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)


def assert_matmul(c, a, b, rtol):
    """c == a @ b within rtol of the size of the terms: |c - ref| <= rtol * (|a| @ |b|)."""
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert c.shape == ref.shape and c.dtype == a.dtype
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    assert np.all(np.abs(c - ref) <= rtol * scale + 1e-300), f"max error {np.max(np.abs(c - ref) / (scale + 1e-300)):.3g}"


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_kernel_matches_numpy_in_float64(name, shape):
    a, b = operands(*shape)
    assert_matmul(KERNELS[name](a, b), a, b, rtol=1e-10)


@pytest.mark.parametrize("name", list(KERNELS))
def test_every_kernel_is_sensible_in_float32(name):
    a, b = operands(33, 70, 9, "float32")
    assert_matmul(KERNELS[name](a, b), a, b, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("shape", SHAPES[2:], ids=lambda s: "x".join(map(str, s)))
def test_packed_with_small_tiles_covers_every_edge(shape, simd, threads):
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    a, b = operands(*shape)
    assert_matmul(kernels.packed_matmul(a, b, tiles=SMALL_TILES, simd=simd, threads=threads), a, b, rtol=1e-10)


@pytest.mark.parametrize("tile", [1, 3, 5, 64])
@pytest.mark.parametrize("views", [False, True])
def test_tiled_with_tiles_that_do_not_divide_the_sizes(tile, views):
    a, b = operands(13, 17, 11)
    assert_matmul(kernels.tiled_matmul(a, b, tile, views=views), a, b, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40), seed=st.integers(0, 1000))
def test_packed_and_loop_orders_on_random_shapes(m, k, n, seed):
    a, b = operands(m, k, n, seed=seed)
    assert_matmul(kernels.packed_matmul(a, b, tiles=SMALL_TILES), a, b, rtol=1e-10)
    assert_matmul(kernels.numba_matmul(a, b, "kji"), a, b, rtol=1e-10)


def test_the_six_orders_give_the_same_product_in_pure_python():
    a, b = operands(6, 5, 4)
    results = [kernels.python_matmul(a, b, order) for order in kernels.LOOP_ORDERS]
    for c in results:
        assert_matmul(c, a, b, rtol=1e-12)


def test_non_contiguous_inputs_are_accepted():
    a, b = operands(20, 30, 10)
    at, bt = np.asfortranarray(a), b.T.copy().T  # column-major, and a transposed view
    for name in ("numba-ikj", "numba-packed-parallel", "python-ikj"):
        assert_matmul(KERNELS[name](at, bt), a, b, rtol=1e-10)
    assert_matmul(KERNELS["numba-packed"](a[::2], b[:, ::3]), a[::2], b[:, ::3], rtol=1e-10)


@pytest.mark.parametrize("name", ["python-ijk", "numba-ikj", "numba-tiled", "numba-packed-parallel", "numpy"])
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (3, 4, 0)])
def test_empty_dimensions_give_zeros(name, shape):
    a, b = operands(*shape)
    c = KERNELS[name](a, b)
    assert c.shape == (shape[0], shape[2]) and not c.any()


# --------------------------------------------------------------------------------------------
# bad input: one validation, clear messages


@pytest.mark.parametrize("name", ["python-ijk", "numba-ikj", "numba-tiled", "numba-packed", "numba-ikj-parallel"])
def test_every_hand_written_kernel_validates(name):
    a, b = operands(3, 4, 5)
    with pytest.raises(ValueError, match="A's 4 columns must equal B's 3 rows"):
        KERNELS[name](a, a.T[:3])
    with pytest.raises(ValueError, match="B must be a 2-D matrix"):
        KERNELS[name](a, b[:, 0])


def test_check_operands_messages():
    a, b = operands(3, 4, 5)
    with pytest.raises(TypeError, match="A must be a numpy array, got list"):
        kernels.check_operands(a.tolist(), b)
    with pytest.raises(ValueError, match=r"A must be a 2-D matrix .* shape \(2, 3, 4\)"):
        kernels.check_operands(np.ones((2, 3, 4)), b)
    with pytest.raises(TypeError, match="B must be float32 or float64, got int64"):
        kernels.check_operands(a, np.ones((4, 5), dtype=np.int64))
    with pytest.raises(TypeError, match="same dtype, got float64 and float32"):
        kernels.check_operands(a, b.astype(np.float32))
    with pytest.raises(ValueError, match=r"cannot multiply A \(3x4\) by B \(5x4\)"):
        kernels.check_operands(a, b.T)


def test_bad_options_are_named():
    a, b = operands(3, 4, 5)
    with pytest.raises(ValueError, match="order must be one of"):
        kernels.numba_matmul(a, b, "ikk")
    with pytest.raises(ValueError, match="tile must be a positive integer"):
        kernels.tiled_matmul(a, b, 0)
    with pytest.raises(ValueError, match="threads must be an integer from 1"):
        kernels.packed_matmul(a, b, threads=0)
    with pytest.raises(ValueError, match="Tiles.mc must be a multiple of 4"):
        Tiles(mc=6, kc=16, nc=8)
    with pytest.raises(ValueError, match="Tiles.kc must be a positive integer"):
        Tiles(mc=8, kc=0, nc=8)
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        kernels.kernel("nope")


# --------------------------------------------------------------------------------------------
# the pieces the chapters explain


def test_misses_per_iteration_ranks_the_orders():
    misses = {order: kernels.misses_per_iteration(order)["total"] for order in kernels.LOOP_ORDERS}
    assert misses == {"ijk": 1.125, "jik": 1.125, "ikj": 0.25, "kij": 0.25, "jki": 2.0, "kji": 2.0}
    assert kernels.misses_per_iteration("ikj") == {"A": 0.0, "B": 0.125, "C": 0.125, "total": 0.25}


def test_access_trace_shows_the_strides():
    trace = kernels.access_trace("ikj", n=5, steps=7)
    assert trace["B"] == [0, 1, 2, 3, 4, 5, 6] and trace["C"] == [0, 1, 2, 3, 4, 0, 1] and trace["A"] == [0] * 5 + [1, 1]
    assert kernels.access_trace("ijk", n=5, steps=3)["B"] == [0, 5, 10]
    assert kernels.access_trace("jki", n=5, steps=3)["A"] == [0, 5, 10]
    assert kernels.cache_line_bytes() in (32, 64, 128, 256)


def test_tile_sizes_follow_the_caches():
    caches = {"L1d": 32 * 1024, "L2": 1024 * 1024, "L3": 32 * 1024 * 1024}
    assert kernels.tile_sizes("float64", caches) == Tiles(mc=128, kc=512, nc=4096)
    assert kernels.tile_sizes("float32", caches) == Tiles(mc=128, kc=1024, nc=4096)
    tiny = kernels.tile_sizes("float64", {"L1d": 1024, "L2": 1024, "L3": 1024})
    assert tiny == Tiles(mc=kernels.MR, kc=16, nc=kernels.NR)
    assert isinstance(kernels.tile_sizes(), Tiles) and kernels.default_tile() % 8 == 0


def test_numba_threads_restores_the_count():
    before = numba.get_num_threads()
    with kernels.numba_threads(1) as n:
        assert n == 1 and numba.get_num_threads() == 1
        with kernels.numba_threads(None) as inner:  # None keeps the count set outside
            assert inner == 1
    assert numba.get_num_threads() == before
    assert kernels.thread_counts(1) == [1] and kernels.thread_counts(2) == [1, 2]
    assert kernels.thread_counts(6) == [1, 2, 4, 6] and kernels.thread_counts(8) == [1, 2, 4, 8]


def test_count_float_ops_reads_x86_and_arm_assembly():
    x86 = """
        vfmadd231pd %zmm1, %zmm2, %zmm3
        vfmadd231pd (%rax), %ymm2, %ymm3
        vmulpd %xmm1, %xmm2, %xmm3
        vfmadd213sd %xmm1, %xmm2, %xmm3
        vaddsd %xmm0, %xmm1, %xmm1
        vmovupd %zmm0, (%rdi)
    """
    assert kernels.count_float_ops(x86 + "vmovupd %ymm3, -72(%rsp)") == {
        "vector_ops": {128: 1, 256: 1, 512: 1}, "scalar_ops": 2, "fma_ops": 3, "widest_bits": 512,
        "vectorized": True, "spills": 1}
    arm = "fmla v0.2d, v1.2d, v2.2d\n fmadd d0, d1, d2, d3\n fadd d1, d1, d2\n ldr q0, [x0]"
    assert kernels.count_float_ops(arm) == {"vector_ops": {128: 1, 256: 0, 512: 0}, "scalar_ops": 2,
                                            "fma_ops": 2, "widest_bits": 128, "vectorized": True, "spills": 0}


def test_fastmath_is_what_vectorizes_the_micro_kernel():
    args = kernels.micro_kernel_arguments()
    simd = kernels.vectorization_report(kernels.micro_kernel_simd, *args)
    scalar = kernels.vectorization_report(kernels.micro_kernel_scalar, *args)
    assert simd["vectorized"] and simd["fma_ops"] > 0
    assert not scalar["vectorized"] and scalar["scalar_ops"] >= 16
    with pytest.raises(TypeError, match="numba.njit function"):
        kernels.assembly(np.matmul)


def test_registry():
    assert kernels.BEST_KERNEL in KERNELS and KERNELS[kernels.BEST_KERNEL].parallel
    assert {k.family for k in KERNELS.values()} == {"python", "numba", "blas"}
    assert all(name == k.name and k.summary for name, k in KERNELS.items())


# --------------------------------------------------------------------------------------------
# measuring


def test_run_ladder_rows():
    rows = kernels.run_ladder(["python-ikj", "numba-ikj", "numba-packed-parallel", "numpy"], [8, 24],
                              repeats=2, python_max_n=8, progress=False)
    assert [(r["kernel"], r["n"]) for r in rows] == [
        ("python-ikj", 8), ("numba-ikj", 8), ("numba-packed-parallel", 8), ("numpy", 8),
        ("numba-ikj", 24), ("numba-packed-parallel", 24), ("numpy", 24)]
    for row in rows:
        assert row["gflops"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["threads"] == (1 if row["family"] == "numba" and "parallel" not in row["kernel"]
                                  else row["threads"])
    with pytest.raises(ValueError, match="dtype must be"):
        kernels.run_ladder(["numpy"], [8], "int8")
    with pytest.raises(ValueError, match="sizes must be positive"):
        kernels.run_ladder(["numpy"], [0])


def test_add_ratios():
    rows = [{"kernel": "numpy", "n": 8, "dtype": "float64", "threads": 1, "gflops": 10.0},
            {"kernel": "numpy", "n": 8, "dtype": "float64", "threads": 2, "gflops": 20.0},
            {"kernel": "numba-ikj", "n": 8, "dtype": "float64", "threads": 1, "gflops": 5.0}]
    out = kernels.add_ratios(rows, {("float64", 1): 50.0, ("float64", 2): 100.0})
    assert out[2]["ratio_to_blas"] == 0.25 and out[2]["pct_of_peak"] == 10.0 and out[1]["pct_of_peak"] == 20.0


def test_suite_runs_through_the_bench_cli_parser(tmp_path):
    options = bench.build_parser().parse_args(["matmul", "--quick", "--sizes", "8", "--dtypes", "float32"])
    rows = bench.resolve_suite("matmul")(options)
    timed = [r for r in rows if r["family"] in ("python", "numba", "blas")]
    assert {r["kernel"] for r in timed} == set(KERNELS)
    assert all("ratio_to_blas" in r and "pct_of_peak" in r and r["dtype"] == "float32" for r in timed)
    assert any(r["family"] == "peak" for r in rows) and any(r["family"] == "memory" for r in rows)
    with pytest.raises(SystemExit, match="float64 and float32 only"):
        bench.resolve_suite("matmul")(argparse.Namespace(**{**vars(options), "dtypes": ["bfloat16"]}))


def test_spin_trap_and_bandwidth_return_measurements():
    trap = kernels.blas_spin_trap("numba-ikj-parallel", n=32, repeats=3)
    assert set(trap) == {"alone_s", "after_blas_s", "after_blas_limited_s"} and all(v > 0 for v in trap.values())
    scalar = kernels.measure_scalar_peak(seconds=0.01)
    assert scalar["gflops"] > 0 and scalar["threads"] == 1
    report = kernels.vectorization_report(kernels._scalar_fma_chains, 10, 1.0, 1.0)
    assert not report["vectorized"] and report["fma_ops"] >= 16
    bandwidth = kernels.measure_bandwidth(megabytes=8, repeats=2)
    assert bandwidth["gbytes_per_s"] > 0 and bandwidth["bytes"] == 8 * 2**20
    with pytest.raises(ValueError, match="megabytes must be >= 1"):
        kernels.measure_bandwidth(megabytes=0)
