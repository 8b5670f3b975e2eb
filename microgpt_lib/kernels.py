"""Matrix multiplication by hand: loop order, tiling, packing, SIMD and threads (chapters 04-05).

Every kernel takes two 2-D float arrays, A (rows x inner) and B (inner x cols), and returns a
new C = A @ B with A's dtype. From three Python loops to a kernel within reach of BLAS:

    check_operands(a, b)          the one validation every kernel runs: 2-D, one float dtype, shapes
    loop_ijk ... loop_kji         C += A @ B as three nested loops, in each of the six orders
    python_matmul(a, b, order)    those loops run by the Python interpreter, on lists
    numba_matmul(a, b, order)     the very same functions compiled by numba
    tiled_matmul(a, b, tile)      naive cache blocking of ikj (the honest result: no faster)
    Tiles, tile_sizes(dtype)      block sizes for the packed kernels, from the machine's cache sizes
    micro_kernel(...)             the dot-product micro-kernel: a 4x4 tile of C, 16 dot products
                                  in registers, vectorized along k (needs fastmath)
    packed_matmul(a, b, ...)      copy blocks into contiguous panels, run that micro-kernel on them
    outer_micro_kernel(...)       the outer-product micro-kernel of Goto and BLIS: an 8x8 tile of
                                  C, one rank-1 update per step of k, vectorized along j
    outer_packed_matmul(a, b)     Goto's loop nest and packed slivers around it (no fastmath)
    ikj_parallel_matmul(a, b)     ikj with numba.prange over the rows of C
    KERNELS, kernel(name)         name -> Kernel, the registry chapters 04-07 and the bench use

How they are measured and inspected (strides, assembly, the ladder) is in kernels_lab.
"""

from __future__ import annotations

import contextlib
import functools
import math
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numba
import numpy as np

from . import bench, machine

FLOAT_DTYPES = tuple(np.dtype(d) for d in bench.FLOAT_DTYPES)


# --------------------------------------------------------------------------------------------
# one validation for every kernel


def check_operands(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return A and B as C-contiguous arrays, or raise an error that says what is wrong."""
    for name, x in (("A", a), ("B", b)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D matrix (rows x columns), got shape {x.shape}"
            )
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(
            f"A and B must have the same dtype, got {a.dtype} and {b.dtype}: "
            f"convert one with .astype()"
        )
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"cannot multiply A ({a.shape[0]}x{a.shape[1]}) by B ({b.shape[0]}x{b.shape[1]}): "
            f"A's {a.shape[1]} columns must equal B's {b.shape[0]} rows"
        )
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


# --------------------------------------------------------------------------------------------
# chapter 04: six loop orders of the same arithmetic
#
# c[i][j] += a[i][k] * b[k][j] for every i, j, k; only the nesting differs. Each function hoists
# the one value that does not change in its inner loop, as a programmer would. Indexing is
# written x[i][k] so that one source runs on Python lists and, compiled, on numpy arrays.


def loop_ijk(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for i in range(rows):
        for j in range(cols):
            s = c[i][j]
            for k in range(
                inner
            ):  # walks a row of A (stride 1) and a column of B (stride cols)
                s += a[i][k] * b[k][j]
            c[i][j] = s


def loop_jik(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for j in range(cols):
        for i in range(rows):
            s = c[i][j]
            for k in range(inner):  # the same inner loop as ijk
                s += a[i][k] * b[k][j]
            c[i][j] = s


def loop_ikj(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for i in range(rows):
        for k in range(inner):
            r = a[i][k]
            for j in range(cols):  # walks rows of B and C: stride 1, both
                c[i][j] += r * b[k][j]


def loop_kij(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for k in range(inner):
        for i in range(rows):
            r = a[i][k]
            for j in range(cols):  # the same inner loop as ikj
                c[i][j] += r * b[k][j]


def loop_jki(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for j in range(cols):
        for k in range(inner):
            r = b[k][j]
            for i in range(rows):  # walks columns of A and C: stride inner and cols
                c[i][j] += a[i][k] * r


def loop_kji(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for k in range(inner):
        for j in range(cols):
            r = b[k][j]
            for i in range(rows):  # the same inner loop as jki
                c[i][j] += a[i][k] * r


LOOP_ORDERS: dict[str, Callable] = {
    "ijk": loop_ijk,
    "jik": loop_jik,
    "ikj": loop_ikj,
    "kij": loop_kij,
    "jki": loop_jki,
    "kji": loop_kji,
}
# the same six functions compiled to machine code (lazily, on first call; cached on disk)
COMPILED_LOOP_ORDERS: dict[str, Any] = {
    order: numba.njit(cache=True)(fn) for order, fn in LOOP_ORDERS.items()
}


def check_order(order: str) -> str:
    """order itself if it is one of the six loop orders, else a ValueError listing them."""
    if order not in LOOP_ORDERS:
        raise ValueError(f"order must be one of {', '.join(LOOP_ORDERS)}, got {order!r}")
    return order


def python_matmul(a: np.ndarray, b: np.ndarray, order: str = "ijk") -> np.ndarray:
    """C = A @ B by the pure-Python loops of the given order, on lists of lists."""
    a, b = check_operands(a, b)
    loop = LOOP_ORDERS[check_order(order)]
    c = [[0.0] * b.shape[1] for _ in range(a.shape[0])]
    if a.size and b.size:
        loop(a.tolist(), b.tolist(), c)
    return np.array(c, dtype=a.dtype).reshape(a.shape[0], b.shape[1])


def numba_matmul(a: np.ndarray, b: np.ndarray, order: str = "ikj") -> np.ndarray:
    """C = A @ B by the same loops compiled by numba (no fastmath, one thread)."""
    a, b = check_operands(a, b)
    loop = COMPILED_LOOP_ORDERS[check_order(order)]
    c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    if a.size and b.size:
        loop(a, b, c)
    return c


# --------------------------------------------------------------------------------------------
# chapter 05: tiling, naive and packed


def loop_tiled(a, b, c, tile):
    """ikj over tile x tile blocks, so that each block of A, B and C is reused while in cache."""
    rows, inner, cols = c.shape[0], b.shape[0], c.shape[1]
    for i0 in range(0, rows, tile):
        for k0 in range(0, inner, tile):
            for j0 in range(0, cols, tile):
                for i in range(i0, min(i0 + tile, rows)):
                    for k in range(k0, min(k0 + tile, inner)):
                        r = a[i, k]
                        for j in range(j0, min(j0 + tile, cols)):
                            c[i, j] += r * b[k, j]


def loop_tiled_views(a, b, c, tile):
    """loop_tiled with one change: the inner loop runs over views of the tile's rows, from 0.

    numba accepts negative indices (x[-1] is the last element), so for an index it cannot
    prove non-negative, such as j in range(j0, j1), it adds a check to every access, and that
    check stops LLVM from vectorizing the loop. Counting from 0 over a view removes it.
    """
    rows, inner, cols = c.shape[0], b.shape[0], c.shape[1]
    for i0 in range(0, rows, tile):
        for k0 in range(0, inner, tile):
            for j0 in range(0, cols, tile):
                for i in range(i0, min(i0 + tile, rows)):
                    c_tile = c[i, j0 : j0 + tile]
                    for k in range(k0, min(k0 + tile, inner)):
                        r = a[i, k]
                        b_tile = b[k, j0 : j0 + tile]
                        for j in range(len(c_tile)):
                            c_tile[j] += r * b_tile[j]


compiled_loop_tiled = numba.njit(cache=True)(loop_tiled)
compiled_loop_tiled_views = numba.njit(cache=True)(loop_tiled_views)


def default_tile(dtype: Any = np.float64) -> int:
    """The naive tile: the largest multiple of 8 such that three tile x tile blocks fit in L1."""
    l1 = machine.cache_sizes()["L1d"]
    return max(8, int(math.sqrt(l1 / (3 * np.dtype(dtype).itemsize))) // 8 * 8)


def tiled_matmul(
    a: np.ndarray, b: np.ndarray, tile: int | None = None, *, views: bool = False
) -> np.ndarray:
    """C = A @ B by naive blocking: ikj, one tile x tile block at a time (numba, one thread).

    tile   block side in elements (default: default_tile(dtype), three blocks in L1)
    views  run loop_tiled_views (inner loop over views, vectorized) instead of loop_tiled
    """
    a, b = check_operands(a, b)
    tile = default_tile(a.dtype) if tile is None else tile
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    if a.size and b.size:
        (compiled_loop_tiled_views if views else compiled_loop_tiled)(a, b, c, int(tile))
    return c


# The packed kernel with a dot-product micro-kernel. C is cut into MR x NR tiles; each tile is
# 16 dot products of length kc, kept in registers by the micro-kernel. The data it reads is
# first copied ("packed") into small contiguous buffers sized to the caches: a kc-slice of NR
# columns of B (read again for every tile down a block of A: L1), an mc x kc block of A (read
# again for every NR columns of B: L2), and a kc x nc panel of B (read again for every block
# of A: L3). Goto's and BLIS's micro-kernel is shaped differently: see outer_micro_kernel.
MR, NR = 4, 4


@dataclass(frozen=True)
class Tiles:
    """Packed-kernel blocks, in elements: rows of A (mc), inner slice (kc), columns of B (nc)."""

    mc: int
    kc: int
    nc: int

    def __post_init__(self):
        for name in ("mc", "kc", "nc"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"Tiles.{name} must be a positive integer, got {value!r}"
                )
        if self.mc % MR or self.nc % NR:
            raise ValueError(
                f"Tiles.mc must be a multiple of {MR} and nc of {NR}, "
                f"got mc={self.mc}, nc={self.nc}"
            )


@functools.lru_cache(maxsize=None)
def _default_tiles(dtype: np.dtype, mr: int = MR, nr: int = NR) -> Tiles:
    return tile_sizes(dtype, mr=mr, nr=nr)


def tile_sizes(
    dtype: Any = np.float64,
    caches: dict[str, int] | None = None,
    *,
    mr: int = MR,
    nr: int = NR,
) -> Tiles:
    """Block sizes from the cache sizes (machine.cache_sizes(): common ones if the OS says nothing).

    kc: the nr packed columns of B, reused by every micro-kernel down a block of A, fill half
        of L1 (the other half for the rows of A streaming past, and C);
    mc: the mc x kc block of A, reused for every nr columns of B, fills half of L2;
    nc: the kc x nc panel of B, reused by every block of A, fills half of L3.
    mr, nr: the micro-kernel's tile (default: the dot-product kernel's 4 x 4; the outer-product
        kernel's is OUTER_MR x OUTER_NR). mc and nc come out as whole tiles.
    """
    caches = {**machine.cache_sizes(), **(caches or {})}
    itemsize = np.dtype(dtype).itemsize
    kc = max(16, caches["L1d"] // 2 // (nr * itemsize) // 16 * 16)
    mc = max(mr, caches["L2"] // 2 // (kc * itemsize) // mr * mr)
    nc = max(nr, caches["L3"] // 2 // (kc * itemsize) // nr * nr)
    return Tiles(mc=mc, kc=kc, nc=nc)


def micro_kernel(a_pack, b_pack, c, i, j):
    """C[i:i+4, j:j+4] += a_pack @ b_pack.T: the dot-product (inner-product) micro-kernel.

    a_pack is 4 rows of A and b_pack 4 columns of B, each a contiguous row of kc numbers. The
    16 running sums are local variables, which the compiler keeps in registers for the whole
    loop; each step loads 8 numbers and does 16 multiply-adds with them. Its only vector
    direction is k, the direction of the sums: compiled with fastmath, the compiler may split
    each sum into SIMD-width partial sums (a reordering of the additions), so every line of the
    loop becomes one vector FMA over several values of k, and the lanes of each of the 16 sums
    must be added up at the end (a horizontal reduction). Without fastmath it stays scalar.
    """
    a0, a1, a2, a3 = a_pack[0], a_pack[1], a_pack[2], a_pack[3]
    b0, b1, b2, b3 = b_pack[0], b_pack[1], b_pack[2], b_pack[3]
    c00, c01, c02, c03 = c[i, j], c[i, j + 1], c[i, j + 2], c[i, j + 3]
    c10, c11, c12, c13 = c[i + 1, j], c[i + 1, j + 1], c[i + 1, j + 2], c[i + 1, j + 3]
    c20, c21, c22, c23 = c[i + 2, j], c[i + 2, j + 1], c[i + 2, j + 2], c[i + 2, j + 3]
    c30, c31, c32, c33 = c[i + 3, j], c[i + 3, j + 1], c[i + 3, j + 2], c[i + 3, j + 3]
    for p in range(a_pack.shape[1]):
        x0, x1, x2, x3 = a0[p], a1[p], a2[p], a3[p]
        y0, y1, y2, y3 = b0[p], b1[p], b2[p], b3[p]
        c00, c01, c02, c03 = c00 + x0 * y0, c01 + x0 * y1, c02 + x0 * y2, c03 + x0 * y3
        c10, c11, c12, c13 = c10 + x1 * y0, c11 + x1 * y1, c12 + x1 * y2, c13 + x1 * y3
        c20, c21, c22, c23 = c20 + x2 * y0, c21 + x2 * y1, c22 + x2 * y2, c23 + x2 * y3
        c30, c31, c32, c33 = c30 + x3 * y0, c31 + x3 * y1, c32 + x3 * y2, c33 + x3 * y3
    c[i, j], c[i, j + 1], c[i, j + 2], c[i, j + 3] = c00, c01, c02, c03
    c[i + 1, j], c[i + 1, j + 1], c[i + 1, j + 2], c[i + 1, j + 3] = c10, c11, c12, c13
    c[i + 2, j], c[i + 2, j + 1], c[i + 2, j + 2], c[i + 2, j + 3] = c20, c21, c22, c23
    c[i + 3, j], c[i + 3, j + 1], c[i + 3, j + 2], c[i + 3, j + 3] = c30, c31, c32, c33


# Two compilations of the one source. fastmath=True lets LLVM reassociate the sums (split each
# into partial sums over k: SIMD) and contract x*y+s into one FMA instruction; {"contract"}
# allows only the FMA, so the sums keep their order and the loop stays scalar. (The second is
# not cached on disk: numba's cache keeps one compilation per source function.)
micro_kernel_simd = numba.njit(fastmath=True, cache=True)(micro_kernel)
micro_kernel_scalar = numba.njit(fastmath={"contract"})(micro_kernel)


@numba.njit(cache=True)
def pack_rows(a, i0, k0, out):
    """out[r, :] = a[i0 + r, k0 : k0 + width]: A's rows, contiguous; zeros past A's edge."""
    width = out.shape[1]
    for r in range(out.shape[0]):
        if i0 + r < a.shape[0]:
            out[r, :] = a[i0 + r, k0 : k0 + width]
        else:
            out[r, :] = 0


@numba.njit(cache=True)
def pack_columns(b, k0, j0, out):
    """out[r, :] = b[k0 : k0 + width, j0 + r]: B's columns as rows; zeros past B's edge."""
    width = out.shape[1]
    for r in range(out.shape[0]):
        if j0 + r < b.shape[1]:
            out[r, :] = b[k0 : k0 + width, j0 + r]
        else:
            out[r, :] = 0


@numba.njit(parallel=True, cache=True)
def packed_matmul_blocks(a, b, c, mc, kc, nc, simd):
    """C += A @ B over packed blocks; C's shape is padded to multiples of MR x NR."""
    rows, inner, cols = a.shape[0], b.shape[0], b.shape[1]
    for j0 in range(0, cols, nc):  # a panel of B's columns (L3)
        panel = (min(nc, cols - j0) + NR - 1) // NR * NR
        for k0 in range(0, inner, kc):  # a slice of the inner dimension
            width = min(kc, inner - k0)
            b_pack = np.empty((panel, width), b.dtype)
            for jp in numba.prange(
                panel // NR
            ):  # packing B is shared among the threads too
                pack_columns(b, k0, j0 + jp * NR, b_pack[jp * NR : (jp + 1) * NR])
            for block in numba.prange(
                (rows + mc - 1) // mc
            ):  # blocks of A's rows, one per thread
                i0 = block * mc
                a_pack = np.empty(
                    ((min(mc, rows - i0) + MR - 1) // MR * MR, width), a.dtype
                )
                pack_rows(a, i0, k0, a_pack)  # (L2)
                for j in range(0, panel, NR):  # NR packed columns of B: stay in L1 ...
                    for i in range(
                        0, a_pack.shape[0], MR
                    ):  # ... while MR rows of A stream past
                        if simd:
                            micro_kernel_simd(
                                a_pack[i : i + MR], b_pack[j : j + NR], c, i0 + i, j0 + j
                            )
                        else:
                            micro_kernel_scalar(
                                a_pack[i : i + MR], b_pack[j : j + NR], c, i0 + i, j0 + j
                            )


def packed_matmul(
    a: np.ndarray,
    b: np.ndarray,
    *,
    threads: int | None = None,
    tiles: Tiles | None = None,
    simd: bool = True,
) -> np.ndarray:
    """C = A @ B by packed blocks and a 4x4 register-tile micro-kernel.

    threads  numba threads for the row blocks (None: numba's current count; 1: one thread)
    tiles    block sizes (default: tile_sizes(dtype) from this machine's caches)
    simd     False runs the micro-kernel compiled without reassociation: same loop, scalar code
    """
    a, b = check_operands(a, b)
    rows, cols = a.shape[0], b.shape[1]
    tiles = tiles or _default_tiles(a.dtype)
    c = np.zeros(((rows + MR - 1) // MR * MR, (cols + NR - 1) // NR * NR), a.dtype)
    with machine.numba_threads(threads) as n:
        # give every thread at least one block of rows when A is short
        mc = min(tiles.mc, max(MR, (-(-rows // n) + MR - 1) // MR * MR))
        if a.size and b.size:
            packed_matmul_blocks(a, b, c, mc, tiles.kc, tiles.nc, simd)
    return c if c.shape == (rows, cols) else np.ascontiguousarray(c[:rows, :cols])


# --------------------------------------------------------------------------------------------
# the outer-product micro-kernel of Goto and BLIS
#
# The dot-product micro-kernel above vectorizes along k, the direction of its sums: it needs
# fastmath to reorder them, and a horizontal reduction at the end of every call. Goto's and
# BLIS's micro-kernel vectorizes along j instead. Each step of k broadcasts one number of A's
# column and multiplies it with a whole row of B's panel: a rank-1 (outer-product) update of
# the register tile. Every lane of a vector is a sum of its own, added in order, so it needs
# no reordering at all. It wants A and B packed k-major, in slivers of OUTER_MR rows of A and
# OUTER_NR columns of B, so that each step reads two short contiguous runs.
OUTER_MR, OUTER_NR = 8, 8  # the register tile: 8 rows of C, each a vector of 8 numbers


@contextlib.contextmanager
def slp_vectorizer() -> Iterator[None]:
    """Compile the numba functions first called inside the block with LLVM's SLP vectorizer.

    numba runs LLVM's loop vectorizer, which turns iterations of a loop into the lanes of a
    vector, and leaves its SLP ("superword-level parallelism") vectorizer off unless
    NUMBA_SLP_VECTORIZE=1. The outer-product micro-kernel needs the SLP one: its lanes are not
    iterations of a loop but the 8 multiply-adds of one statement. numba reads the setting
    when it compiles, so code compiled before or after the block is not affected.
    """
    old = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = old


@numba.njit(inline="always")
def load_row(c, i, j):
    """c[i, j : j + 8] as a tuple of 8 numbers: a value the compiler keeps in registers."""
    # fmt: off
    return (
        c[i, j], c[i, j + 1], c[i, j + 2], c[i, j + 3],
        c[i, j + 4], c[i, j + 5], c[i, j + 6], c[i, j + 7],
    )
    # fmt: on


@numba.njit(inline="always")
def axpy_row(acc, x, row):
    """acc + x * row[:8], element by element: 8 independent multiply-adds, one vector FMA."""
    # fmt: off
    return (
        acc[0] + x * row[0], acc[1] + x * row[1], acc[2] + x * row[2], acc[3] + x * row[3],
        acc[4] + x * row[4], acc[5] + x * row[5], acc[6] + x * row[6], acc[7] + x * row[7],
    )
    # fmt: on


@numba.njit(inline="always")
def store_row(c, i, j, acc):
    """c[i, j : j + 8] = acc."""
    for q in range(8):
        c[i, j + q] = acc[q]


# fastmath={"contract"}: x * y + s may become one FMA instruction, and nothing is reordered
@numba.njit(fastmath={"contract"})
def outer_micro_kernel(a_sliver, b_sliver, c, i, j):
    """C[i:i+8, j:j+8] += a_sliver.T @ b_sliver: one rank-1 update of an 8x8 tile per step of k.

    a_sliver[p] is 8 numbers of A's column p (rows i to i+7), b_sliver[p] 8 numbers of B's
    row p (columns j to j+7). Row r of the tile gains a_sliver[p, r] * b_sliver[p]: one number
    broadcast, times a vector. The tile is 8 tuples of 8 numbers, 64 sums in registers; each
    step loads 16 numbers and does 64 multiply-adds, as 8 independent vector FMAs.
    """
    c0, c1 = load_row(c, i, j), load_row(c, i + 1, j)
    c2, c3 = load_row(c, i + 2, j), load_row(c, i + 3, j)
    c4, c5 = load_row(c, i + 4, j), load_row(c, i + 5, j)
    c6, c7 = load_row(c, i + 6, j), load_row(c, i + 7, j)
    for p in range(a_sliver.shape[0]):
        x, y = a_sliver[p], b_sliver[p]  # 8 numbers of A's column p, 8 of B's row p
        c0, c1 = axpy_row(c0, x[0], y), axpy_row(c1, x[1], y)
        c2, c3 = axpy_row(c2, x[2], y), axpy_row(c3, x[3], y)
        c4, c5 = axpy_row(c4, x[4], y), axpy_row(c5, x[5], y)
        c6, c7 = axpy_row(c6, x[6], y), axpy_row(c7, x[7], y)
    for r, row in enumerate((c0, c1, c2, c3, c4, c5, c6, c7)):
        store_row(c, i + r, j, row)


@numba.njit(cache=True)
def pack_a_slivers(a, i0, k0, out):
    """out[s, p, r] = a[i0 + s * mr + r, k0 + p]: A's rows, mr at a time, k-major; zeros past
    A's edge. out has shape (slivers, width, mr)."""
    slivers, width, mr = out.shape
    for s in range(slivers):
        for r in range(mr):
            i = i0 + s * mr + r
            if i < a.shape[0]:
                out[s, :, r] = a[i, k0 : k0 + width]
            else:
                out[s, :, r] = 0


@numba.njit(cache=True)
def pack_b_slivers(b, k0, j0, out):
    """out[s, p, q] = b[k0 + p, j0 + s * nr + q]: B's columns, nr at a time, k-major; zeros
    past B's edge. out has shape (slivers, width, nr)."""
    slivers, width, nr = out.shape
    for s in range(slivers):
        j = j0 + s * nr
        n = max(0, min(nr, b.shape[1] - j))  # the columns of B left for this sliver
        out[s, :, :n] = b[k0 : k0 + width, j : j + n]
        out[s, :, n:] = 0


@numba.njit(parallel=True, cache=True)
def outer_packed_blocks(a, b, c, mc, kc, nc, mr, nr):
    """C += A @ B by Goto's loop nest around the mr x nr outer_micro_kernel (C padded to whole
    tiles; driver_for compiles the same loops around another micro-kernel)."""
    rows, inner, cols = a.shape[0], b.shape[0], b.shape[1]
    for j0 in range(0, cols, nc):  # a panel of nc columns of B ...
        slivers = (min(nc, cols - j0) + nr - 1) // nr
        for k0 in range(0, inner, kc):  # ... and kc rows: packed, it stays in L3
            width = min(kc, inner - k0)
            b_pack = np.empty((slivers, width, nr), b.dtype)
            for s in numba.prange(slivers):  # the threads share the packing of B
                pack_b_slivers(b, k0, j0 + s * nr, b_pack[s : s + 1])
            for block in numba.prange((rows + mc - 1) // mc):  # mc rows of A per thread
                i0 = block * mc
                a_pack = np.empty(
                    ((min(mc, rows - i0) + mr - 1) // mr, width, mr), a.dtype
                )
                pack_a_slivers(a, i0, k0, a_pack)  # mc x kc of A: L2
                for s in range(slivers):  # one sliver of B, kc x nr: stays in L1 ...
                    for t in range(a_pack.shape[0]):  # ... while A's slivers stream past
                        outer_micro_kernel(
                            a_pack[t], b_pack[s], c, i0 + t * mr, j0 + s * nr
                        )


@functools.lru_cache(maxsize=None)
def driver_for(micro_kernel: Any, parallel: bool = True) -> Any:
    """outer_packed_blocks compiled around another micro-kernel: the same Python function, its
    global name outer_micro_kernel bound to micro_kernel (compiled anew, not cached on disk;
    parallel=False compiles faster, for one thread)."""
    if micro_kernel is outer_micro_kernel:
        return outer_packed_blocks
    if not hasattr(micro_kernel, "py_func"):
        raise TypeError(
            f"micro_kernel must be a numba.njit function, got {type(micro_kernel).__name__}"
        )
    py = outer_packed_blocks.py_func
    rebound = types.FunctionType(
        py.__code__, {**py.__globals__, "outer_micro_kernel": micro_kernel}, py.__name__
    )
    return numba.njit(parallel=parallel)(rebound)


def outer_packed_matmul(
    a: np.ndarray,
    b: np.ndarray,
    *,
    threads: int | None = None,
    tiles: Tiles | None = None,
    micro_kernel: Any = None,
    mr: int = OUTER_MR,
    nr: int = OUTER_NR,
) -> np.ndarray:
    """C = A @ B by packed slivers and an outer-product micro-kernel, without fastmath.

    threads       numba threads for the blocks of A's rows (None: numba's current count)
    tiles         block sizes (default: tile_sizes(dtype, mr=mr, nr=nr)); mc and nc are
                  rounded down to whole tiles
    micro_kernel  a numba function (a_sliver, b_sliver, c, i, j) that adds a_sliver.T @ b_sliver
                  to C[i:i+mr, j:j+nr] (default: outer_micro_kernel, 8 x 8)
    The kernels are compiled on first use with LLVM's SLP vectorizer on (slp_vectorizer()).
    """
    a, b = check_operands(a, b)
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (mr, nr)
    ):
        raise ValueError(f"mr and nr must be positive integers, got mr={mr!r}, nr={nr!r}")
    if micro_kernel is None or micro_kernel is outer_micro_kernel:
        micro_kernel, mr, nr = outer_micro_kernel, OUTER_MR, OUTER_NR
    blocks = driver_for(micro_kernel, parallel=threads != 1)
    rows, cols = a.shape[0], b.shape[1]
    tiles = tiles or _default_tiles(a.dtype, mr, nr)
    c = np.zeros((-(-rows // mr) * mr, -(-cols // nr) * nr), a.dtype)
    with machine.numba_threads(threads) as n, slp_vectorizer():
        # whole tiles; and every thread at least one block of rows when A is short
        per_thread = -(-rows // n)  # rows per thread, rounded up
        mc = mr * max(1, min(tiles.mc // mr, -(-per_thread // mr)))
        nc = nr * max(1, tiles.nc // nr)
        if a.size and b.size:
            blocks(a, b, c, mc, tiles.kc, nc, mr, nr)
    return c if c.shape == (rows, cols) else np.ascontiguousarray(c[:rows, :cols])


# --------------------------------------------------------------------------------------------
# threads: the same ikj loop, its rows shared among threads


def loop_ikj_parallel(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for i in numba.prange(
        rows
    ):  # the only change from loop_ikj: rows of C go to different threads
        for k in range(inner):
            r = a[i][k]
            for j in range(cols):
                c[i][j] += r * b[k][j]


compiled_loop_ikj_parallel = numba.njit(parallel=True, cache=True)(loop_ikj_parallel)


def ikj_parallel_matmul(
    a: np.ndarray, b: np.ndarray, *, threads: int | None = None
) -> np.ndarray:
    """C = A @ B, ikj with numba.prange over rows (threads None: numba's current count)."""
    a, b = check_operands(a, b)
    c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    with machine.numba_threads(threads):
        if a.size and b.size:
            compiled_loop_ikj_parallel(a, b, c)
    return c


# --------------------------------------------------------------------------------------------
# the registry: every kernel by name, in the order of the ladder


@dataclass(frozen=True)
class Kernel:
    """A named matmul kernel: call it with (A, B) to get C."""

    name: str
    family: str  # "python", "numba" or "blas"
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    summary: str
    parallel: bool = False  # runs on several threads (numba's or the BLAS library's)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.fn(a, b)


def _registry() -> dict[str, Kernel]:
    kernels = [
        Kernel(
            f"python-{order}",
            "python",
            functools.partial(python_matmul, order=order),
            f"pure-Python loops, order {order}, on lists",
        )
        for order in LOOP_ORDERS
    ]
    kernels += [
        Kernel(
            f"numba-{order}",
            "numba",
            functools.partial(numba_matmul, order=order),
            f"the same loops compiled by numba, order {order}",
        )
        for order in LOOP_ORDERS
    ]
    kernels += [
        Kernel(
            "numba-tiled",
            "numba",
            tiled_matmul,
            "ikj over tile x tile blocks (naive tiling)",
        ),
        Kernel(
            "numba-tiled-views",
            "numba",
            functools.partial(tiled_matmul, views=True),
            "naive tiling, inner loop over views so that it vectorizes",
        ),
        Kernel(
            "numba-packed-scalar",
            "numba",
            functools.partial(packed_matmul, threads=1, simd=False),
            "packed blocks + 4x4 register tile, compiled without SIMD",
        ),
        Kernel(
            "numba-packed",
            "numba",
            functools.partial(packed_matmul, threads=1),
            "packed blocks + 4x4 register tile, SIMD (fastmath), one thread",
        ),
        Kernel(
            "numba-outer",
            "numba",
            functools.partial(outer_packed_matmul, threads=1),
            "packed slivers + 8x8 outer-product micro-kernel (Goto/BLIS), no fastmath, "
            "one thread",
        ),
        Kernel(
            "numba-ikj-parallel",
            "numba",
            ikj_parallel_matmul,
            "ikj with prange over rows",
            parallel=True,
        ),
        Kernel(
            "numba-packed-parallel",
            "numba",
            packed_matmul,
            "packed blocks + 4x4 register tile, SIMD, prange over row blocks",
            parallel=True,
        ),
        Kernel(
            "numba-outer-parallel",
            "numba",
            outer_packed_matmul,
            "packed slivers + 8x8 outer-product micro-kernel, prange over row blocks",
            parallel=True,
        ),
        Kernel(
            "numpy",
            "blas",
            np.matmul,
            "numpy.matmul: the BLAS library numpy links",
            parallel=True,
        ),
    ]
    return {k.name: k for k in kernels}


KERNELS: dict[str, Kernel] = _registry()
BEST_KERNEL = "numba-packed-parallel"  # the course's best hand-written kernel


def kernel(name: str) -> Kernel:
    """KERNELS[name], with an error that lists the names."""
    if name not in KERNELS:
        raise ValueError(
            f"unknown kernel {name!r}; the kernels are: {', '.join(KERNELS)}"
        )
    return KERNELS[name]
