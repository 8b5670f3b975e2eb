"""Chapters 04-05's experiments: what each loop order touches, what the compiler made of it,
and the ladder that times every kernel.

    access_trace(order, n, steps)  the offsets of A, B and C the first iterations touch
    misses_per_iteration(order)    cache lines one inner-loop step brings in, from the strides
    count_float_ops(asm), assembly(fn, ...), vectorization_report(fn, ...)   SIMD, read from
                                   the machine code numba generates
    blas_spin_trap(...)            OpenBLAS's spinning idle threads vs a parallel numba kernel
    threads_for(kernel, threads)   the thread settings one kernel is timed under
    run_ladder(...)                time kernels by N: one row per (kernel, N)
    add_ratio_to_blas(rows)        each row against numpy at the same N and dtype
    suite_matmul(options)          python -m microgpt_lib.bench matmul
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from typing import Any, Callable, Iterator

import numba
import numpy as np

from . import bench, machine
from .kernels import BEST_KERNEL, KERNELS, MR, NR, Kernel, check_order, kernel

# --------------------------------------------------------------------------------------------
# chapter 04: what a loop order touches


def access_trace(order: str, n: int, steps: int) -> dict[str, list[int]]:
    """Offsets (in elements, row-major) of the A, B and C elements the first `steps` iterations
    of a loop order touch, for N x N matrices: the picture behind the strides."""
    check_order(order)
    trace: dict[str, list[int]] = {"A": [], "B": [], "C": []}
    for step, values in enumerate(itertools.product(range(n), repeat=3)):
        if step == steps:
            break
        index = dict(
            zip(order, values)
        )  # e.g. order "ikj": the outer loop is i, the inner j
        i, j, k = index["i"], index["j"], index["k"]
        trace["A"].append(i * n + k)
        trace["B"].append(k * n + j)
        trace["C"].append(i * n + j)
    return trace


def misses_per_iteration(
    order: str, itemsize: int = 8, line_bytes: int = 64
) -> dict[str, float]:
    """Cache lines each inner-loop step of a loop order touches for A, B and C, when N is large.

    The inner loop's letter decides the strides: over j, B and C move along a row (stride 1,
    one new line every line_bytes / itemsize steps) and A stays put; over k, A moves along a
    row but B down a column (a new line every step); over i, A and C both move down columns.
    """
    check_order(order)
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
    return {
        "vector_ops": vector,
        "scalar_ops": scalar,
        "fma_ops": len(_FMA.findall(asm)),
        "widest_bits": widest,
        "vectorized": widest > 0,
        "spills": len(_SPILL.findall(asm)),
    }


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
    return asm[start : end if end > 0 else len(asm)]


def vectorization_report(fn: Any, *args: Any) -> dict[str, Any]:
    """How many vector and scalar floating-point instructions `fn` compiles to for these arguments.

    e.g. vectorization_report(micro_kernel_simd, *micro_kernel_arguments())["widest_bits"] is 512
    on a CPU with AVX-512, 256 with AVX2, 128 with NEON, 0 if the compiler did not vectorize.
    """
    return count_float_ops(assembly(fn, *args))


def micro_kernel_arguments(dtype: Any = np.float64, kc: int = 64) -> tuple:
    """Small example arguments for micro_kernel_simd / micro_kernel_scalar (for the reports)."""
    return (
        np.ones((MR, kc), dtype),
        np.ones((NR, kc), dtype),
        np.zeros((MR, NR), dtype),
        0,
        0,
    )


# --------------------------------------------------------------------------------------------
# threads: the OpenBLAS spin-wait trap


def blas_spin_trap(
    name: str = BEST_KERNEL, n: int = 256, repeats: int = 15, seed: int = 0
) -> dict[str, float]:
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
        return bench.Timing.from_times([sample() for _ in range(repeats)]).median_s

    out = {
        "alone_s": bench.measure(lambda: run(a, b), repeats=repeats).median_s,
        "after_blas_s": median_of(after_blas),
    }
    with machine.limit_blas_threads(1):
        out["after_blas_limited_s"] = median_of(after_blas)
    return out


# --------------------------------------------------------------------------------------------
# the benchmark ladder


def time_within_budget(
    fn: Callable[[], Any], repeats: int, budget_s: float
) -> bench.Timing:
    """bench.measure, except that a call too slow for `repeats` within budget_s gets fewer."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first * (repeats + 1) <= budget_s:  # the first call was the warm-up
        return bench.measure(
            fn, warmup=0, repeats=repeats, min_time=0.01 if first < 1e-3 else 0.0
        )
    # slow: caches no longer matter at this size, so the first call counts as a sample
    times = [first] + [
        bench.measure(fn, warmup=0, repeats=1).median_s
        for _ in range(max(0, min(repeats, int(budget_s / first)) - 1))
    ]
    return bench.Timing.from_times(times)


@contextlib.contextmanager
def threads_for(k: Kernel, threads: int | None) -> Iterator[int]:
    """Threads for one kernel's timing: its own pool set to `threads`, BLAS at 1 for numba."""
    if k.family == "blas":
        with machine.limit_blas_threads(threads):
            yield threads or machine.blas_threads() or 1
    else:  # numba or Python: keep OpenBLAS's idle threads from spinning on our cores
        with (
            machine.limit_blas_threads(1),
            machine.numba_threads(threads if k.parallel else None) as n,
        ):
            yield n if k.parallel else 1


def run_ladder(
    names: list[str] | None = None,
    sizes: list[int] = (64, 128, 256),
    dtype: str = "float64",
    *,
    threads: int | None = None,
    repeats: int = 7,
    python_max_n: int = 128,
    budget_s: float = 5.0,
    max_call_s: float = 60.0,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time kernels (default: all of KERNELS) on N x N @ N x N products; one row per (kernel, N).

    threads      thread count for parallel kernels and BLAS (None: all)
    python_max_n pure-Python kernels only up to this N
    budget_s     about how long one (kernel, N) point may take: slow calls get fewer repeats
    max_call_s   skip a kernel at an N where one call would take longer (from its previous N)
    """
    from tqdm.auto import tqdm

    names = list(KERNELS) if names is None else names
    chosen = [kernel(name) for name in names]
    bench.check_dtype(dtype)
    if not sizes or any(not isinstance(n, (int, np.integer)) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((8, 8)).astype(dtype)
    last: dict[
        str, tuple[int, float]
    ] = {}  # kernel -> (N, seconds per call) at its previous size
    rows = []
    points = [(n, k) for n in sorted(sizes) for k in chosen]
    for n, k in tqdm(points, desc=f"matmul {dtype}", disable=not progress, leave=False):
        if k.family == "python" and n > python_max_n:
            continue
        if k.name in last and last[k.name][1] * (n / last[k.name][0]) ** 3 > max_call_s:
            continue
        a, b = (
            rng.standard_normal((n, n)).astype(dtype),
            rng.standard_normal((n, n)).astype(dtype),
        )
        with threads_for(k, threads) as used:
            k(small, small)  # compile (or load numba's cache) before the clock starts
            timing = time_within_budget(lambda: k(a, b), repeats, budget_s)
        last[k.name] = (n, timing.median_s)
        rows.append(bench.matmul_row(k.name, k.family, n, dtype, used, timing))
    return rows


def add_ratio_to_blas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ratio_to_blas to each matmul row: its GFLOP/s over the "numpy" row of the same N and
    dtype on the most threads (in place; rows without such a numpy row are left alone)."""
    blas: dict[tuple[int, str], tuple[int, float]] = {}
    for row in rows:
        if row["kernel"] == "numpy":
            key = (row["n"], row["dtype"])
            if key not in blas or row["threads"] > blas[key][0]:
                blas[key] = (row["threads"], row["gflops"])
    for row in rows:
        if (row.get("n"), row.get("dtype")) in blas:
            row["ratio_to_blas"] = row["gflops"] / blas[(row["n"], row["dtype"])][1]
    return rows


def suite_matmul(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """The whole ladder: pure Python, every numba kernel, numpy/BLAS; with peak and bandwidth rows.

    Every kernel runs at all threads; the parallel ones and numpy also at fewer threads (for
    the scaling plot and the size below which threads lose). Options: sizes, dtypes (float64,
    float32), threads, repeats, python_max_n; quick: N <= 256, 3 repeats.
    """
    limit = options.threads or numba.config.NUMBA_NUM_THREADS
    sizes = options.sizes or (
        [32, 64, 128, 256] if options.quick else [16, 32, 64, 128, 256, 512, 1024]
    )
    dtypes = [bench.check_dtype(d) for d in options.dtypes or ["float64"]]
    settings = {
        "repeats": options.rounds,
        "python_max_n": min(options.python_max_n, 64)
        if options.quick
        else options.python_max_n,
        "budget_s": 2.0 if options.quick else 5.0,
    }
    parallel = [name for name, k in KERNELS.items() if k.parallel]
    rows: list[dict[str, Any]] = []
    peaks: list[dict[str, Any]] = []
    for dtype in dtypes:
        rows += run_ladder(None, sizes, dtype, threads=limit, **settings)
        for t in machine.thread_counts(limit)[:-1]:
            rows += run_ladder(parallel, sizes, dtype, threads=t, **settings)
        for t in machine.thread_counts(limit):
            single, every = bench.peak_rows(machine.measure_peak(dtype, threads=t))
            peaks.append(every if t > 1 else single)
    rows = add_ratio_to_blas(bench.with_percent_of_peak(rows, peaks))
    peaks.append(
        {
            "kernel": "scalar-fma-loop",
            "family": "peak",
            "dtype": "float64",
            "threads": 1,
            "gflops": machine.measure_scalar_peak()["gflops"],
        }
    )
    bandwidth = machine.measure_bandwidth(threads=limit)
    peaks.append(
        {
            "kernel": "read-bandwidth",
            "family": "memory",
            "threads": bandwidth["threads"],
            "gbytes_per_s": bandwidth["gbytes_per_s"],
            "bytes": bandwidth["bytes"],
        }
    )
    return rows + peaks
