"""Every matmul kernel against numpy.matmul, the validation, the tile sizes and the ladder."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_lib import kernels
from microgpt_lib.kernels import KERNELS, Tiles

# non-square, and none a multiple of the 4x4 register tile or of the small tiles used below
SHAPES = [(1, 1, 1), (4, 4, 4), (7, 5, 3), (13, 17, 11), (33, 70, 9), (66, 41, 130)]
SMALL_TILES = Tiles(
    mc=8, kc=16, nc=8
)  # several blocks in every dimension at these shapes


def operands(m, k, n, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(
        dtype
    )


def assert_matmul(c, a, b, rtol):
    """c == a @ b within rtol of the size of the terms: |c - ref| <= rtol * (|a| @ |b|)."""
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert c.shape == ref.shape and c.dtype == a.dtype
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    assert np.all(np.abs(c - ref) <= rtol * scale + 1e-300), (
        f"max error {np.max(np.abs(c - ref) / (scale + 1e-300)):.3g}"
    )


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
    assert_matmul(
        kernels.packed_matmul(a, b, tiles=SMALL_TILES, simd=simd, threads=threads),
        a,
        b,
        rtol=1e-10,
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES[2:], ids=lambda s: "x".join(map(str, s)))
def test_outer_product_kernel_with_small_tiles_covers_every_edge(shape, threads):
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    a, b = operands(*shape)
    tiles = Tiles(mc=8, kc=16, nc=16)  # several blocks of 8 x 8 tiles in every dimension
    c = kernels.outer_packed_matmul(a, b, tiles=tiles, threads=threads)
    assert_matmul(c, a, b, rtol=1e-10)


@numba.njit(fastmath={"contract"})
def micro_kernel_2x8(a_sliver, b_sliver, c, i, j):
    c0, c1 = kernels.load_row(c, i, j), kernels.load_row(c, i + 1, j)
    for p in range(a_sliver.shape[0]):
        c0 = kernels.axpy_row(c0, a_sliver[p, 0], b_sliver[p])
        c1 = kernels.axpy_row(c1, a_sliver[p, 1], b_sliver[p])
    kernels.store_row(c, i, j, c0)
    kernels.store_row(c, i + 1, j, c1)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_outer_driver_takes_another_micro_kernel(threads):
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    a, b = operands(13, 17, 11)
    c = kernels.outer_packed_matmul(
        a, b, threads=threads, micro_kernel=micro_kernel_2x8, mr=2, nr=8
    )
    assert_matmul(c, a, b, rtol=1e-10)
    # the library's own kernel always gets its own tile, whatever mr and nr say
    c = kernels.outer_packed_matmul(a, b, micro_kernel=kernels.outer_micro_kernel, mr=3)
    assert_matmul(c, a, b, rtol=1e-10)


def test_the_outer_product_kernel_reorders_no_sums():
    assert kernels.outer_micro_kernel.targetoptions["fastmath"] == {"contract"}
    assert kernels.KERNELS["numba-outer"].summary.endswith("no fastmath, one thread")


def test_slp_vectorizer_is_switched_on_only_inside_the_block():
    before = numba.config.SLP_VECTORIZE
    with kernels.slp_vectorizer():
        assert numba.config.SLP_VECTORIZE == 1
    assert numba.config.SLP_VECTORIZE == before


@pytest.mark.parametrize("tile", [1, 3, 5, 64])
@pytest.mark.parametrize("views", [False, True])
def test_tiled_with_tiles_that_do_not_divide_the_sizes(tile, views):
    a, b = operands(13, 17, 11)
    assert_matmul(kernels.tiled_matmul(a, b, tile, views=views), a, b, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 40),
    k=st.integers(1, 40),
    n=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
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
    assert_matmul(
        KERNELS["numba-packed"](a[::2], b[:, ::3]), a[::2], b[:, ::3], rtol=1e-10
    )


@pytest.mark.parametrize(
    "name", ["python-ijk", "numba-ikj", "numba-tiled", "numba-packed-parallel", "numpy"]
)
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (3, 4, 0)])
def test_empty_dimensions_give_zeros(name, shape):
    a, b = operands(*shape)
    c = KERNELS[name](a, b)
    assert c.shape == (shape[0], shape[2]) and not c.any()


# --------------------------------------------------------------------------------------------
# bad input: one validation, clear messages


@pytest.mark.parametrize(
    "name",
    [
        "python-ijk",
        "numba-ikj",
        "numba-tiled",
        "numba-packed",
        "numba-outer",
        "numba-ikj-parallel",
    ],
)
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
    with pytest.raises(ValueError, match="mr and nr must be positive integers"):
        kernels.outer_packed_matmul(a, b, micro_kernel=micro_kernel_2x8, mr=0)
    with pytest.raises(TypeError, match="micro_kernel must be a numba.njit function"):
        kernels.outer_packed_matmul(a, b, micro_kernel=lambda *args: None, mr=2)


# --------------------------------------------------------------------------------------------
# the pieces the chapters explain


def test_tile_sizes_follow_the_caches():
    caches = {"L1d": 32 * 1024, "L2": 1024 * 1024, "L3": 32 * 1024 * 1024}
    assert kernels.tile_sizes("float64", caches) == Tiles(mc=128, kc=512, nc=4096)
    assert kernels.tile_sizes("float32", caches) == Tiles(mc=128, kc=1024, nc=4096)
    tiny = kernels.tile_sizes("float64", {"L1d": 1024, "L2": 1024, "L3": 1024})
    assert tiny == Tiles(mc=kernels.MR, kc=16, nc=kernels.NR)
    # the outer-product kernel's 8-wide slivers of B: half as deep to fill the same half of L1
    outer = kernels.tile_sizes("float64", caches, mr=8, nr=8)
    assert outer == Tiles(mc=256, kc=256, nc=8192)
    assert isinstance(kernels.tile_sizes(), Tiles) and kernels.default_tile() % 8 == 0


def test_registry():
    assert kernels.BEST_KERNEL in KERNELS and KERNELS[kernels.BEST_KERNEL].parallel
    assert {k.family for k in KERNELS.values()} == {"python", "numba", "blas"}
    assert all(name == k.name and k.summary for name, k in KERNELS.items())
