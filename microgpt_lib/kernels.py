"""Matrix multiplication by hand: loop order, tiling, packing, SIMD and threads (chapters 04-05).

Every kernel takes two 2-D float arrays, A (rows x inner) and B (inner x cols), and returns a
new C = A @ B with A's dtype. From three Python loops to a kernel within reach of BLAS:

    check_operands(a, b)          the one validation every kernel runs: 2-D, one float dtype, shapes
    loop_ijk ... loop_kji         C += A @ B as three nested loops, in each of the six orders
    python_matmul(a, b, order)    those loops run by the Python interpreter, on lists
    numba_matmul(a, b, order)     the very same functions compiled by numba
    misses_per_iteration(order)   cache lines one inner-loop step brings in, worked out from strides
    tiled_matmul(a, b, tile)      naive cache blocking of ikj (the honest result: no faster)
    Tiles, tile_sizes(dtype)      block sizes for the packed kernel, from the machine's cache sizes
    micro_kernel(...)             a 4x4 register tile: 16 dot products held in registers
    packed_matmul(a, b, ...)      copy blocks into contiguous panels, run the micro-kernel on them
    ikj_parallel_matmul(a, b)     ikj with numba.prange over the rows of C
    vectorization_report(fn)      does the compiled code use vector FMAs? (reads numba's assembly)
    measure_scalar_peak()         the ceiling for code without SIMD
    measure_bandwidth()           memory read bandwidth, the second roof of the roofline
    KERNELS, BEST_KERNEL          name -> Kernel, the registry chapters 04-07 and the bench use
    run_ladder(...), suite_matmul the benchmark: python -m microgpt_lib.bench matmul
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numba
import numpy as np

from . import bench
from .bench import numba_threads

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------------------------
# one validation for every kernel


def check_operands(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return A and B as C-contiguous arrays, or raise an error that says what is wrong."""
    for name, x in (("A", a), ("B", b)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix (rows x columns), got shape {x.shape}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(f"A and B must have the same dtype, got {a.dtype} and {b.dtype}: "
                        f"convert one with .astype()")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply A ({a.shape[0]}x{a.shape[1]}) by B ({b.shape[0]}x{b.shape[1]}): "
                         f"A's {a.shape[1]} columns must equal B's {b.shape[0]} rows")
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
            for k in range(inner):  # walks a row of A (stride 1) and a column of B (stride cols)
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


LOOP_ORDERS: dict[str, Callable] = {"ijk": loop_ijk, "jik": loop_jik, "ikj": loop_ikj,
                                    "kij": loop_kij, "jki": loop_jki, "kji": loop_kji}
# the same six functions compiled to machine code (lazily, on first call; cached on disk)
COMPILED_LOOP_ORDERS: dict[str, Any] = {order: numba.njit(cache=True)(fn) for order, fn in LOOP_ORDERS.items()}


def _loop(table: dict[str, Any], order: str) -> Any:
    if order not in table:
        raise ValueError(f"order must be one of {', '.join(table)}, got {order!r}")
    return table[order]


def python_matmul(a: np.ndarray, b: np.ndarray, order: str = "ijk") -> np.ndarray:
    """C = A @ B by the pure-Python loops of the given order, on lists of lists."""
    a, b = check_operands(a, b)
    loop = _loop(LOOP_ORDERS, order)
    c = [[0.0] * b.shape[1] for _ in range(a.shape[0])]
    if a.size and b.size:
        loop(a.tolist(), b.tolist(), c)
    return np.array(c, dtype=a.dtype).reshape(a.shape[0], b.shape[1])


def numba_matmul(a: np.ndarray, b: np.ndarray, order: str = "ikj") -> np.ndarray:
    """C = A @ B by the same loops compiled by numba (no fastmath, one thread)."""
    a, b = check_operands(a, b)
    loop = _loop(COMPILED_LOOP_ORDERS, order)
    c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    if a.size and b.size:
        loop(a, b, c)
    return c


def access_trace(order: str, n: int, steps: int) -> dict[str, list[int]]:
    """Offsets (in elements, row-major) of the A, B and C elements the first `steps` iterations
    of a loop order touch, for N x N matrices: the picture behind the strides."""
    _loop(LOOP_ORDERS, order)
    trace: dict[str, list[int]] = {"A": [], "B": [], "C": []}
    for step, values in enumerate(itertools.product(range(n), repeat=3)):
        if step == steps:
            break
        index = dict(zip(order, values))  # e.g. order "ikj": the outer loop is i, the inner j
        i, j, k = index["i"], index["j"], index["k"]
        trace["A"].append(i * n + k)
        trace["B"].append(k * n + j)
        trace["C"].append(i * n + j)
    return trace


def cache_line_bytes() -> int:
    """The cache-line size the OS reports (bench.cache_geometry), 64 bytes if it does not say."""
    return bench.cache_geometry(1)["line_bytes"] or 64


def misses_per_iteration(order: str, itemsize: int = 8, line_bytes: int = 64) -> dict[str, float]:
    """Cache lines each inner-loop step of a loop order touches for A, B and C, when N is large.

    The inner loop's letter decides the strides: over j, B and C move along a row (stride 1,
    one new line every line_bytes / itemsize steps) and A stays put; over k, A moves along a
    row but B down a column (a new line every step); over i, A and C both move down columns.
    """
    _loop(LOOP_ORDERS, order)
    inner = order[-1]
    per_step = itemsize / line_bytes  # stride 1: a new line every (line / itemsize) steps
    # which of i, j, k index each operand's rows and columns
    strides = {"A": ("i", "k"), "B": ("k", "j"), "C": ("i", "j")}
    misses = {}
    for name, (row, col) in strides.items():
        if inner == col:
            misses[name] = per_step  # along a row
        elif inner == row:
            misses[name] = 1.0  # down a column: every step a different line
        else:
            misses[name] = 0.0  # does not move: stays in a register
    misses["total"] = sum(misses.values())
    return misses


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
                    c_tile = c[i, j0:j0 + tile]
                    for k in range(k0, min(k0 + tile, inner)):
                        r = a[i, k]
                        b_tile = b[k, j0:j0 + tile]
                        for j in range(len(c_tile)):
                            c_tile[j] += r * b_tile[j]


_loop_tiled = numba.njit(cache=True)(loop_tiled)
_loop_tiled_views = numba.njit(cache=True)(loop_tiled_views)


def _caches() -> dict[str, int]:
    """This machine's data-cache sizes in bytes, with common sizes where the OS says nothing."""
    found = bench.cpu_info().get("caches", {})
    defaults = {"L1d": 32 * 1024, "L2": 256 * 1024, "L3": 8 * 1024 * 1024}
    return {level: found.get(level) or size for level, size in defaults.items()}


@functools.lru_cache(maxsize=None)
def _cache_sizes() -> tuple[tuple[str, int], ...]:
    return tuple(_caches().items())


def default_tile(dtype: Any = np.float64) -> int:
    """The naive tile: the largest multiple of 8 such that three tile x tile blocks fit in L1."""
    l1 = dict(_cache_sizes())["L1d"]
    return max(8, int(math.sqrt(l1 / (3 * np.dtype(dtype).itemsize))) // 8 * 8)


def tiled_matmul(a: np.ndarray, b: np.ndarray, tile: int | None = None, *, views: bool = False) -> np.ndarray:
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
        (_loop_tiled_views if views else _loop_tiled)(a, b, c, int(tile))
    return c


# The packed kernel, BLIS-style. C is cut into MR x NR tiles; each tile is 16 dot products of
# length kc, kept in registers by the micro-kernel. The data it reads is first copied ("packed")
# into small contiguous buffers sized to the caches: a kc-slice of NR columns of B (read again
# for every tile down a block of A: L1), an mc x kc block of A (read again for every NR columns
# of B: L2), and a kc x nc panel of B (read again for every block of A: L3).
MR, NR = 4, 4


@dataclass(frozen=True)
class Tiles:
    """Block sizes of the packed kernel, in elements: rows of A (mc), inner slice (kc), columns of B (nc)."""

    mc: int
    kc: int
    nc: int

    def __post_init__(self):
        for name in ("mc", "kc", "nc"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Tiles.{name} must be a positive integer, got {value!r}")
        if self.mc % MR or self.nc % NR:
            raise ValueError(f"Tiles.mc must be a multiple of {MR} and nc of {NR}, got mc={self.mc}, nc={self.nc}")


@functools.lru_cache(maxsize=None)
def _default_tiles(dtype: np.dtype) -> Tiles:
    return tile_sizes(dtype)


def tile_sizes(dtype: Any = np.float64, caches: dict[str, int] | None = None) -> Tiles:
    """Block sizes from the cache sizes (bench.cpu_info(); common sizes if the OS does not say).

    kc: the NR packed columns of B, reused by every micro-kernel down a block of A, fill half
        of L1 (the other half for the rows of A streaming past, and C);
    mc: the mc x kc block of A, reused for every NR columns of B, fills half of L2;
    nc: the kc x nc panel of B, reused by every block of A, fills half of L3.
    """
    caches = {**dict(_cache_sizes()), **(caches or {})}
    itemsize = np.dtype(dtype).itemsize
    kc = max(16, caches["L1d"] // 2 // (NR * itemsize) // 16 * 16)
    mc = max(MR, caches["L2"] // 2 // (kc * itemsize) // MR * MR)
    nc = max(NR, caches["L3"] // 2 // (kc * itemsize) // NR * NR)
    return Tiles(mc=mc, kc=kc, nc=nc)


def micro_kernel(a_pack, b_pack, c, i, j):
    """C[i:i+4, j:j+4] += a_pack @ b_pack.T: 16 dot products of length kc, held in registers.

    a_pack is 4 rows of A and b_pack 4 columns of B, each a contiguous row of kc numbers. The
    16 running sums are local variables, which the compiler keeps in registers for the whole
    loop; each step loads 8 numbers and does 16 multiply-adds with them. Compiled with
    fastmath, the compiler may also split each sum into SIMD-width partial sums, so every
    line of the loop becomes one vector FMA over 4 or 8 values of k at a time.
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
# allows only the FMA, so the sums keep their order and the loop stays scalar.
micro_kernel_simd = numba.njit(fastmath=True, cache=True)(micro_kernel)
micro_kernel_scalar = numba.njit(fastmath={"contract"})(micro_kernel)  # not cached: same source as above


@numba.njit(cache=True)
def pack_rows(a, i0, k0, out):
    """out[r, :] = a[i0 + r, k0 : k0 + width]: a block of A's rows, contiguous; zeros past A's edge."""
    width = out.shape[1]
    for r in range(out.shape[0]):
        if i0 + r < a.shape[0]:
            out[r, :] = a[i0 + r, k0:k0 + width]
        else:
            out[r, :] = 0


@numba.njit(cache=True)
def pack_columns(b, k0, j0, out):
    """out[r, :] = b[k0 : k0 + width, j0 + r]: B's columns made contiguous rows; zeros past B's edge."""
    width = out.shape[1]
    for r in range(out.shape[0]):
        if j0 + r < b.shape[1]:
            out[r, :] = b[k0:k0 + width, j0 + r]
        else:
            out[r, :] = 0


@numba.njit(parallel=True, cache=True)
def _packed_matmul(a, b, c, mc, kc, nc, simd):
    """C += A @ B over packed blocks; C's shape is padded to multiples of MR x NR."""
    rows, inner, cols = a.shape[0], b.shape[0], b.shape[1]
    for j0 in range(0, cols, nc):  # a panel of B's columns (L3)
        panel = (min(nc, cols - j0) + NR - 1) // NR * NR
        for k0 in range(0, inner, kc):  # a slice of the inner dimension
            width = min(kc, inner - k0)
            b_pack = np.empty((panel, width), b.dtype)
            for jp in numba.prange(panel // NR):  # packing B is shared among the threads too
                pack_columns(b, k0, j0 + jp * NR, b_pack[jp * NR:(jp + 1) * NR])
            for block in numba.prange((rows + mc - 1) // mc):  # blocks of A's rows, one per thread
                i0 = block * mc
                a_pack = np.empty(((min(mc, rows - i0) + MR - 1) // MR * MR, width), a.dtype)
                pack_rows(a, i0, k0, a_pack)  # (L2)
                for j in range(0, panel, NR):  # NR packed columns of B: stay in L1 ...
                    for i in range(0, a_pack.shape[0], MR):  # ... while MR rows of A stream past
                        if simd:
                            micro_kernel_simd(a_pack[i:i + MR], b_pack[j:j + NR], c, i0 + i, j0 + j)
                        else:
                            micro_kernel_scalar(a_pack[i:i + MR], b_pack[j:j + NR], c, i0 + i, j0 + j)


def packed_matmul(a: np.ndarray, b: np.ndarray, *, threads: int | None = None,
                  tiles: Tiles | None = None, simd: bool = True) -> np.ndarray:
    """C = A @ B by packed blocks and a 4x4 register-tile micro-kernel.

    threads  numba threads for the row blocks (None: numba's current count; 1: one thread)
    tiles    block sizes (default: tile_sizes(dtype) from this machine's caches)
    simd     False runs the micro-kernel compiled without reassociation: same loop, scalar code
    """
    a, b = check_operands(a, b)
    rows, cols = a.shape[0], b.shape[1]
    tiles = tiles or _default_tiles(a.dtype)
    c = np.zeros(((rows + MR - 1) // MR * MR, (cols + NR - 1) // NR * NR), a.dtype)
    with numba_threads(threads) as n:
        # give every thread at least one block of rows when A is short
        mc = min(tiles.mc, max(MR, (-(-rows // n) + MR - 1) // MR * MR))
        if a.size and b.size:
            _packed_matmul(a, b, c, mc, tiles.kc, tiles.nc, simd)
    return c if c.shape == (rows, cols) else np.ascontiguousarray(c[:rows, :cols])


# --------------------------------------------------------------------------------------------
# threads: the same ikj loop, its rows shared among threads


def loop_ikj_parallel(a, b, c):
    rows, inner, cols = len(a), len(b), len(b[0])
    for i in numba.prange(rows):  # the only change from loop_ikj: rows of C go to different threads
        for k in range(inner):
            r = a[i][k]
            for j in range(cols):
                c[i][j] += r * b[k][j]


_loop_ikj_parallel = numba.njit(parallel=True, cache=True)(loop_ikj_parallel)


def ikj_parallel_matmul(a: np.ndarray, b: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """C = A @ B by the ikj loops with numba.prange over rows (threads: None = numba's current count)."""
    a, b = check_operands(a, b)
    c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    with numba_threads(threads):
        if a.size and b.size:
            _loop_ikj_parallel(a, b, c)
    return c


# --------------------------------------------------------------------------------------------
# SIMD: did the compiler vectorize? Read the machine code.

# floating-point multiply, add and fused multiply-add instructions (x86-64 AT&T syntax, AArch64)
_X86_VECTOR = re.compile(r"\bv(?:fn?m(?:add|sub)\w*|mul|add|sub)p[sd]\b[^\n]*?%([xyz])mm")
_X86_SCALAR = re.compile(r"\bv(?:fn?m(?:add|sub)\w*|mul|add|sub)s[sd]\b")
_ARM_VECTOR = re.compile(r"\bf(?:mla|mls|mul|add|sub)\s+v\d+\.\d*[dsh]")
_ARM_SCALAR = re.compile(r"\bf(?:n?madd|n?msub|mul|add|sub)\s+[dsh]\d+")
_FMA = re.compile(r"\bvfn?m(?:add|sub)\w*[ps][sd]\b|\bf(?:mla|mls|n?madd|n?msub)\s")
_X86_BITS = {"x": 128, "y": 256, "z": 512}
# a vector register stored to the stack: the register file is full ("spilling")
_SPILL = re.compile(r"\bvmov\w*\s+%[xyz]mm\d+,\s*-?\d*\(%rsp\)|\bstr\s+q\d+,\s*\[sp")


def count_float_ops(asm: str) -> dict[str, Any]:
    """Count floating-point multiply/add/FMA instructions in assembly text, by register width.

    Counts instructions in the code, not executions: a vectorized loop usually comes with a
    scalar copy for the last few iterations, so a vectorized function shows both kinds; and a
    compiler may emit a vector path for a special case (say, stride 1) that never runs.
    "spills" counts vector registers saved to the stack: more live values than registers.
    """
    vector = {128: 0, 256: 0, 512: 0}
    for reg in _X86_VECTOR.findall(asm):
        vector[_X86_BITS[reg]] += 1
    vector[128] += len(_ARM_VECTOR.findall(asm))
    scalar = len(_X86_SCALAR.findall(asm)) + len(_ARM_SCALAR.findall(asm))
    widest = max((bits for bits, n in vector.items() if n), default=0)
    return {"vector_ops": vector, "scalar_ops": scalar, "fma_ops": len(_FMA.findall(asm)),
            "widest_bits": widest, "vectorized": widest > 0, "spills": len(_SPILL.findall(asm))}


def assembly(fn: Any, *args: Any) -> str:
    """The machine code numba generates for `fn` (a numba function) called with args like these.

    Only the function itself (and what the compiler inlined into it): not the wrappers numba
    adds to call it from Python. It compiles a fresh, uncached copy with the same options, since
    code loaded from numba's disk cache cannot be inspected. Nothing is run.
    """
    if not hasattr(fn, "py_func") or not hasattr(fn, "targetoptions"):
        raise TypeError(f"fn must be a numba.njit function, got {type(fn).__name__}")
    options = {k: v for k, v in fn.targetoptions.items() if k != "nopython"}
    fresh = numba.njit(**options)(fn.py_func)
    fresh.compile(tuple(numba.typeof(x) for x in args))
    compiled = fresh.overloads[fresh.signatures[0]]
    asm = compiled.library.get_asm_str()
    start = asm.find(f"\n{compiled.fndesc.mangled_name}:")
    if start < 0:  # unexpected layout: give the whole module rather than nothing
        return asm
    end = asm.find(".Lfunc_end", start)
    return asm[start:end if end > 0 else len(asm)]


def vectorization_report(fn: Any, *args: Any) -> dict[str, Any]:
    """How many vector and scalar floating-point instructions `fn` compiles to for these arguments.

    e.g. vectorization_report(micro_kernel_simd, *micro_kernel_arguments())["widest_bits"] is 512
    on a CPU with AVX-512, 256 with AVX2, 128 with NEON, 0 if the compiler did not vectorize.
    """
    return count_float_ops(assembly(fn, *args))


def micro_kernel_arguments(dtype: Any = np.float64, kc: int = 64) -> tuple:
    """Small example arguments for micro_kernel_simd / micro_kernel_scalar (for the reports)."""
    return (np.ones((MR, kc), dtype), np.ones((NR, kc), dtype), np.zeros((MR, NR), dtype), 0, 0)


@numba.njit(fastmath={"contract"}, cache=True)
def _scalar_fma_chains(iterations, a, b):
    # 16 independent chains of x = x * a + b: enough to keep every FMA unit busy, one number at a time
    x0 = x1 = x2 = x3 = x4 = x5 = x6 = x7 = 1.0
    y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = 1.0
    for _ in range(iterations):
        x0, x1, x2, x3 = x0 * a + b, x1 * a + b, x2 * a + b, x3 * a + b
        x4, x5, x6, x7 = x4 * a + b, x5 * a + b, x6 * a + b, x7 * a + b
        y0, y1, y2, y3 = y0 * a + b, y1 * a + b, y2 * a + b, y3 * a + b
        y4, y5, y6, y7 = y4 * a + b, y5 * a + b, y6 * a + b, y7 * a + b
    return x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + y0 + y1 + y2 + y3 + y4 + y5 + y6 + y7


def measure_scalar_peak(seconds: float = 0.3) -> dict[str, Any]:
    """One core's float64 peak without SIMD: scalar FMAs on 16 independent chains, best of 7.

    The ceiling code that was not vectorized cannot pass. (Compiled with fastmath={"contract"}:
    FMAs allowed, nothing reordered, so the compiler has no licence to vectorize the chains.)
    """
    a, b = 1.0 - 1e-9, 1e-9
    _scalar_fma_chains(1, a, b)  # compile
    iterations = max(1000, int(seconds / 7 * 1e9 / 16))  # about seconds / 7 per call at 1 FMA per ns
    timing = bench.measure(lambda: _scalar_fma_chains(iterations, a, b), repeats=7)
    return {"gflops": bench.gflops(2 * 16 * iterations, timing.min_s),
            "median_gflops": bench.gflops(2 * 16 * iterations, timing.median_s), "threads": 1, "source": "measured"}


# --------------------------------------------------------------------------------------------
# the second roof: how fast memory delivers data


@numba.njit(parallel=True, fastmath=True, cache=True)
def _read_all(x):
    total = 0.0
    for i in numba.prange(x.shape[0]):
        total += x[i]
    return total


def measure_bandwidth(megabytes: int | None = None, threads: int | None = None, repeats: int = 5) -> dict[str, Any]:
    """Main-memory read bandwidth in GB/s: a parallel sum over an array far larger than L3.

    megabytes  the array's size (default: 8 x L3, at least 256 MiB, so that caches do not help)
    Returns {"gbytes_per_s" (best of the repeats), "median_gbytes_per_s", "threads", "bytes"}.
    Reading only (no writes) keeps the byte count unambiguous.
    """
    if megabytes is None:
        megabytes = max(256, 8 * (dict(_cache_sizes())["L3"] >> 20))
    if megabytes < 1:
        raise ValueError(f"megabytes must be >= 1, got {megabytes}")
    x = np.ones(megabytes * 2**20 // 8)
    with numba_threads(threads) as n:
        timing = bench.measure(lambda: _read_all(x), warmup=1, repeats=repeats)
    return {"gbytes_per_s": x.nbytes / timing.min_s / 1e9, "median_gbytes_per_s": x.nbytes / timing.median_s / 1e9,
            "threads": n, "bytes": x.nbytes, "source": "measured"}


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
    kernels = [Kernel(f"python-{order}", "python", functools.partial(python_matmul, order=order),
                      f"pure-Python loops, order {order}, on lists") for order in LOOP_ORDERS]
    kernels += [Kernel(f"numba-{order}", "numba", functools.partial(numba_matmul, order=order),
                       f"the same loops compiled by numba, order {order}") for order in LOOP_ORDERS]
    kernels += [
        Kernel("numba-tiled", "numba", tiled_matmul, "ikj over tile x tile blocks (naive tiling)"),
        Kernel("numba-tiled-views", "numba", functools.partial(tiled_matmul, views=True),
               "naive tiling, inner loop over views so that it vectorizes"),
        Kernel("numba-packed-scalar", "numba", functools.partial(packed_matmul, threads=1, simd=False),
               "packed blocks + 4x4 register tile, compiled without SIMD"),
        Kernel("numba-packed", "numba", functools.partial(packed_matmul, threads=1),
               "packed blocks + 4x4 register tile, SIMD (fastmath), one thread"),
        Kernel("numba-ikj-parallel", "numba", ikj_parallel_matmul, "ikj with prange over rows", parallel=True),
        Kernel("numba-packed-parallel", "numba", packed_matmul,
               "packed blocks + 4x4 register tile, SIMD, prange over row blocks", parallel=True),
        Kernel("numpy", "blas", np.matmul, "numpy.matmul: the BLAS library numpy links", parallel=True),
    ]
    return {k.name: k for k in kernels}


KERNELS: dict[str, Kernel] = _registry()
BEST_KERNEL = "numba-packed-parallel"  # the course's best hand-written kernel


def kernel(name: str) -> Kernel:
    """KERNELS[name], with an error that lists the names."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; the kernels are: {', '.join(KERNELS)}")
    return KERNELS[name]


# --------------------------------------------------------------------------------------------
# threads: the OpenBLAS spin-wait trap


def blas_spin_trap(name: str = BEST_KERNEL, n: int = 256, repeats: int = 15, seed: int = 0) -> dict[str, float]:
    """Time a kernel alone, right after a numpy/BLAS call, and the same with BLAS on one thread.

    After a call, OpenBLAS's worker threads keep spinning for a while, waiting for more work;
    a parallel numba kernel started in that window shares its cores with them. Limiting BLAS
    to one thread (threadpoolctl) around numba code removes the spinning workers.
    Returns median seconds per call: {"alone_s", "after_blas_s", "after_blas_limited_s"}.
    """
    run = kernel(name)
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    x = rng.standard_normal((200, 200))
    run(a, b)  # compile

    def after_blas() -> float:
        x @ x  # wakes the BLAS threads
        start = time.perf_counter()
        run(a, b)
        return time.perf_counter() - start

    def median_of(sample: Callable[[], float]) -> float:
        return float(np.median([sample() for _ in range(repeats)]))

    out = {"alone_s": bench.measure(lambda: run(a, b), repeats=repeats).median_s, "after_blas_s": median_of(after_blas)}
    with bench.blas_threads_limited(1):
        out["after_blas_limited_s"] = median_of(after_blas)
    return out


# --------------------------------------------------------------------------------------------
# the benchmark ladder


def _time(fn: Callable[[], Any], repeats: int, budget_s: float) -> bench.Timing:
    """bench.measure, except that a call too slow for `repeats` within budget_s gets fewer repeats."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first * (repeats + 1) <= budget_s:  # the first call was the warm-up
        return bench.measure(fn, warmup=0, repeats=repeats, min_time=0.01 if first < 1e-3 else 0.0)
    # slow: caches no longer matter at this size, so the first call counts as a sample
    times = [first] + [bench.measure(fn, warmup=0, repeats=1).median_s
                       for _ in range(max(0, min(repeats, int(budget_s / first)) - 1))]
    return bench.Timing.from_times(times)


@contextlib.contextmanager
def _threads_for(k: Kernel, threads: int | None) -> Iterator[int]:
    """Threads for one kernel's timing: its own pool set to `threads`, BLAS at 1 thread for numba."""
    if k.family == "blas":
        with bench.blas_threads_limited(threads):
            yield threads or bench.blas_threads() or 1
    else:  # numba or Python: keep OpenBLAS's idle threads from spinning on our cores
        with bench.blas_threads_limited(1), numba_threads(threads if k.parallel else None) as n:
            yield n if k.parallel else 1


def run_ladder(names: list[str] | None = None, sizes: list[int] = (64, 128, 256), dtype: str = "float64", *,
               threads: int | None = None, repeats: int = 7, python_max_n: int = 128, budget_s: float = 5.0,
               max_call_s: float = 60.0, seed: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Time kernels (default: all of KERNELS) on N x N @ N x N products; one row per (kernel, N).

    threads      thread count for parallel kernels and BLAS (None: all)
    python_max_n pure-Python kernels only up to this N
    budget_s     about how long one (kernel, N) point may take: slow calls get fewer repeats
    max_call_s   skip a kernel at an N where one call would take longer (from its previous N)
    """
    from tqdm.auto import tqdm

    names = list(KERNELS) if names is None else names
    chosen = [kernel(name) for name in names]
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if not sizes or any(not isinstance(n, (int, np.integer)) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((8, 8)).astype(dtype)
    last: dict[str, tuple[int, float]] = {}  # kernel -> (N, seconds per call) at its previous size
    rows = []
    points = [(n, k) for n in sorted(sizes) for k in chosen]
    for n, k in tqdm(points, desc=f"matmul {dtype}", disable=not progress, leave=False):
        if k.family == "python" and n > python_max_n:
            continue
        if k.name in last and last[k.name][1] * (n / last[k.name][0]) ** 3 > max_call_s:
            continue
        a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
        with _threads_for(k, threads) as used:
            k(small, small)  # compile (or load numba's cache) before the clock starts
            timing = _time(lambda: k(a, b), repeats, budget_s)
        last[k.name] = (n, timing.median_s)
        rows.append({"kernel": k.name, "family": k.family, "n": n, "dtype": dtype, "threads": used,
                     **timing.as_row(), "gflops": bench.gflops(bench.matmul_flops(n, n, n), timing.median_s)})
    return rows


def add_ratios(rows: list[dict[str, Any]], peaks: dict[tuple[str, int], float]) -> list[dict[str, Any]]:
    """Add peak_gflops, pct_of_peak (peak for the row's dtype and threads) and ratio_to_blas.

    ratio_to_blas compares with the "numpy" row of the same N and dtype on the most threads.
    """
    blas: dict[tuple[int, str], tuple[int, float]] = {}
    for row in rows:
        if row["kernel"] == "numpy":
            key = (row["n"], row["dtype"])
            if key not in blas or row["threads"] > blas[key][0]:
                blas[key] = (row["threads"], row["gflops"])
    for row in rows:
        peak = peaks.get((row["dtype"], row["threads"]))
        if peak:
            row["peak_gflops"] = peak
            row["pct_of_peak"] = bench.percent_of_peak(row["gflops"], peak)
        if (row["n"], row["dtype"]) in blas:
            row["ratio_to_blas"] = row["gflops"] / blas[(row["n"], row["dtype"])][1]
    return rows


def thread_counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to limit, and limit itself: the thread counts a scaling sweep visits."""
    counts = [1 << i for i in range(max(1, limit).bit_length()) if 1 << i < limit]
    return counts + [limit]


def suite_matmul(options: argparse.Namespace) -> list[dict[str, Any]]:
    """The whole ladder: pure Python, every numba kernel, numpy/BLAS; with peak and bandwidth rows.

    Every kernel runs at all threads; the parallel ones and numpy also at fewer threads (for
    the scaling plot and the size below which threads lose). --quick: N <= 256, 3 repeats.
    """
    limit = options.threads or numba.config.NUMBA_NUM_THREADS
    sizes = options.sizes or ([32, 64, 128, 256] if options.quick else [16, 32, 64, 128, 256, 512, 1024])
    dtypes = options.dtypes or ["float64"]
    if any(d not in ("float64", "float32") for d in dtypes):
        raise SystemExit(f"the matmul suite runs float64 and float32 only, got {dtypes}")
    settings = {"repeats": min(options.repeats, 3) if options.quick else options.repeats,
                "python_max_n": min(options.python_max_n, 64) if options.quick else options.python_max_n,
                "budget_s": 2.0 if options.quick else 5.0}
    parallel = [name for name, k in KERNELS.items() if k.parallel]
    rows: list[dict[str, Any]] = []
    peaks: dict[tuple[str, int], float] = {}
    for dtype in dtypes:
        rows += run_ladder(None, sizes, dtype, threads=limit, **settings)
        for t in thread_counts(limit)[:-1]:
            rows += run_ladder(parallel, sizes, dtype, threads=t, **settings)
        for t in thread_counts(limit):
            peak = bench.measure_peak(dtype, threads=t)
            peaks[(dtype, t)] = peak["gflops"] if t > 1 else peak["per_core_gflops"]
            rows.append({"kernel": "fma-loop", "family": "peak", "dtype": dtype, "threads": t,
                         "gflops": peaks[(dtype, t)]})
    rows.append({"kernel": "scalar-fma-loop", "family": "peak", "dtype": "float64", "threads": 1,
                 "gflops": measure_scalar_peak()["gflops"]})
    bandwidth = measure_bandwidth(threads=limit)
    rows.append({"kernel": "read-bandwidth", "family": "memory", "threads": bandwidth["threads"],
                 "gbytes_per_s": bandwidth["gbytes_per_s"], "bytes": bandwidth["bytes"]})
    return add_ratios([r for r in rows if r["family"] not in ("peak", "memory")], peaks) + \
        [r for r in rows if r["family"] in ("peak", "memory")]
