"""Chapter 06's experiments: numpy's @ timed by size, threads, operand layout and call count.

operands(n, dtype)        random N x N matrices (or a stack of them), the same on every run
matmul_rows(...)          GFLOP/s of numpy's @ by N and dtype, on the threads running now
thread_sweep(...)         the same for several thread counts (in-process, or in a child process)
threads_used(n)           how many threads the BLAS kept busy on an N x N product
layout_rows(...)          one product with transposed and strided operands
call_overhead_rows(...)   tiny products: one call each in a Python loop vs one stacked call
dispatch_rows(...)        where a tiny call's time goes: numpy's dispatch vs the BLAS itself
token_rows(...)           microgpt's shape: a 16 x 16 matvec per token vs one product for all
suite_blas(options)       python -m microgpt_lib.bench blas: the above, with the peak

Exercises (each checker returns a message, or raises AssertionError saying what is wrong):
    check_thread_threshold(n)        the smallest N at which the BLAS uses more than one thread
    check_mlp_all_tokens(fn)         microgpt's MLP on every token in one product per layer
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numba
import numpy as np

from . import bench, machine
from .blas import blas_library, run_python, thread_env

# --------------------------------------------------------------------------------------------
# operands, and the yardstick


def operands(
    n: int, dtype: str, batch: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two random N x N matrices (or two stacks of ``batch`` of them), the same on every run."""
    rng = np.random.default_rng(seed)
    shape = (n, n) if batch is None else (batch, n, n)
    a = rng.standard_normal(shape).astype(dtype)
    return a, rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# the sweep, and threads


def matmul_rows(
    sizes: Sequence[int],
    dtypes: Sequence[str] = bench.FLOAT_DTYPES,
    repeats: int = 7,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """GFLOP/s of ``a @ b`` for square N x N matrices, on the BLAS threads running now.

    ``threads`` is only the label for the rows when threadpoolctl cannot report the count.
    """
    for dtype in dtypes:
        bench.check_dtype(dtype)
    if any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    library, running = blas_library(), machine.blas_threads() or threads
    rows = []
    for dtype in dtypes:
        for n in sizes:
            a, b = operands(n, dtype)
            # min_time: repeat tiny products until a sample lasts 20 ms, for the clock to resolve
            t = bench.measure(lambda: a @ b, warmup=1, repeats=repeats, min_time=0.02)
            rows.append(
                bench.matmul_row(
                    "numpy-matmul", "blas", n, dtype, running, t, library=library
                )
            )
    return rows


def thread_sweep(
    sizes: Sequence[int],
    dtypes: Sequence[str] = bench.FLOAT_DTYPES,
    thread_counts: Sequence[int] | None = None,
    repeats: int = 7,
    isolate: bool | None = None,
) -> list[dict[str, Any]]:
    """matmul_rows for each thread count (default: 1 and all the BLAS runs now).

    In-process with threadpoolctl where it controls the BLAS; otherwise (Accelerate, or
    isolate=True) each thread count runs in a child interpreter started with thread_env(n).
    Each row says how its threads were set ("threads_set_by").
    """
    if thread_counts is None:
        everything = machine.blas_threads() or os.cpu_count() or 1
        thread_counts = sorted({1, everything})
    in_process = bool(machine.blas_pools()) if isolate is None else not isolate
    rows = []
    for threads in thread_counts:
        if in_process:
            with machine.limit_blas_threads(threads, strict=True):
                found = matmul_rows(sizes, dtypes, repeats, threads)
        else:
            code = (
                f"import json; from microgpt_lib import blas_lab; print(json.dumps("
                f"blas_lab.matmul_rows({list(sizes)!r}, {list(dtypes)!r}, {repeats}, {threads})))"
            )
            found = json.loads(
                run_python(code, env=thread_env(threads)).strip().splitlines()[-1]
            )
        rows += [
            {**row, "threads_set_by": "threadpoolctl" if in_process else "environment"}
            for row in found
        ]
    return rows


def _thread_cpu_ns() -> dict[str, int] | None:
    """Nanoseconds of CPU time each thread of this process has had (Linux); None elsewhere."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    times = {}
    for task in tasks.iterdir():
        try:  # schedstat: time on a CPU (ns), time waiting for one, time slices
            times[task.name] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return times or None


def threads_used(
    n: int, dtype: str = "float64", seconds: float = 0.02, settle_s: float = 0.25
) -> int:
    """How many threads numpy's BLAS keeps busy on N x N products: the threads of this process
    whose CPU time grew by at least a third as much as the busiest one's during a loop of calls.

    On Linux each thread's CPU time comes from /proc/self/task/*/schedstat, which a busy machine
    does not distort. Elsewhere it is the process's CPU time over the wall time, rounded (right on
    a quiet machine only). It first waits settle_s, so that worker threads still spinning after
    an earlier call (OpenBLAS's spin for a while, waiting for more work) have gone to sleep.
    """
    a, b = operands(n, bench.check_dtype(dtype))
    a @ b
    time.sleep(settle_s)
    before, cpu_start, start = _thread_cpu_ns(), time.process_time(), time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    after, cpu_s, wall_s = (
        _thread_cpu_ns(),
        time.process_time() - cpu_start,
        time.perf_counter() - start,
    )
    if before is None or after is None:
        return max(1, round(cpu_s / wall_s))
    grown = [after[t] - before.get(t, 0) for t in after]
    return sum(1 for g in grown if g >= max(grown) / 3)


def layout_rows(
    n: int = 512, dtype: str = "float64", repeats: int = 7, threads: int | None = 1
) -> list[dict[str, Any]]:
    """One N x N product with operands in different memory layouts, on ``threads`` BLAS threads.

    A transposed operand is handed to BLAS as a flag ('read this one transposed'); a view with
    steps along its rows cannot be described to BLAS at all, so numpy copies it into a
    contiguous buffer first: the strided row also says how long that copy alone takes
    (``copy_s``). One thread by default: the comparison is about layout, and one thread is the
    least disturbed by a busy machine (where threadpoolctl cannot set it, the BLAS runs on
    what it has). The cases are timed round-robin, so a change of load hits them alike.
    """
    bench.check_dtype(dtype)
    a, b = operands(n, dtype)
    wide = np.random.default_rng(1).standard_normal((n, 2 * n)).astype(dtype)
    strided = wide[:, ::2]  # every other column: N x N, but not contiguous
    cases = {
        "a @ b": lambda: a @ b,
        "a.T @ b": lambda: a.T @ b,
        "a.T @ b.T": lambda: a.T @ b.T,
        "strided @ b": lambda: strided @ b,
        "copy": lambda: np.ascontiguousarray(strided),
    }
    # where threadpoolctl cannot set the threads, the BLAS runs on what it has
    with machine.limit_blas_threads(threads):
        running = machine.blas_threads()
        timings = bench.measure_interleaved(cases, repeats=repeats, min_time=0.02)
    copy = timings.pop("copy")
    return [
        bench.matmul_row(
            "numpy-matmul",
            "blas",
            n,
            dtype,
            running,
            t,
            layout=layout,
            **({"copy_s": copy.median_s} if layout == "strided @ b" else {}),
        )
        for layout, t in timings.items()
    ]


# --------------------------------------------------------------------------------------------
# the cost of a call


def call_overhead_rows(
    sizes: Sequence[int] = (2, 4, 8, 16, 32, 64),
    batch: int = 1000,
    dtype: str = "float64",
    repeats: int = 7,
) -> list[dict[str, Any]]:
    """Seconds per tiny N x N product: one call, ``batch`` calls in a Python loop, one stacked call.

    The stacked call ``A @ B`` on (batch, N, N) arrays crosses from Python into C once and loops
    over the batch there: the numpy version of "minimise bridge calls".
    """
    bench.check_dtype(dtype)
    rows = []
    for n in sizes:
        A, B = operands(n, dtype, batch=batch)
        a, b = A[0], B[0]
        cases = {
            "one call": (lambda: a @ b, 1),
            "python loop": (lambda: [A[i] @ B[i] for i in range(batch)], batch),
            "stacked": (lambda: A @ B, batch),
        }
        for method, (fn, products) in cases.items():
            t = bench.measure(fn, warmup=1, repeats=repeats, min_time=0.02)
            per_product = t.median_s / products
            row = bench.matmul_row(
                "numpy-matmul",
                "blas",
                n,
                dtype,
                machine.blas_threads(),
                t,
                method=method,
                batch=products,
                per_product_s=per_product,
            )
            rows.append(
                {**row, "gflops": bench.gflops(bench.matmul_flops(n, n, n), per_product)}
            )
    return rows


# cblas_dgemm's symbol in the BLAS numpy loaded, and whether it takes 64-bit integers (ILP64)
_DGEMM_SYMBOLS = (
    ("scipy_cblas_dgemm64_", True),
    ("cblas_dgemm64_", True),
    ("cblas_dgemm", False),
)


def blas_dgemm() -> Callable[..., None] | None:
    """cblas_dgemm of the very BLAS numpy calls, as a ctypes function (numba can call it), or None.

    The library is the one threadpoolctl found loaded (machine.blas_pools); numpy's wheels name
    OpenBLAS's symbol scipy_cblas_dgemm64_ (64-bit integers). None where there is no such
    library or symbol (Apple's Accelerate, which threadpoolctl cannot see, or an unusual build).
    """
    for pool in machine.blas_pools():
        try:
            library = ctypes.CDLL(pool["filepath"])
        except (OSError, KeyError):
            continue
        for symbol, ilp64 in _DGEMM_SYMBOLS:
            dgemm = getattr(library, symbol, None)
            if dgemm is None:
                continue
            i, size = ctypes.c_int, (ctypes.c_int64 if ilp64 else ctypes.c_int)
            d, p = ctypes.c_double, ctypes.c_void_p
            dgemm.argtypes = [i, i, i, size, size, size, d, p, size, p, size, d, p, size]
            dgemm.restype = None
            return dgemm
    return None


@functools.lru_cache(maxsize=None)
def _dgemm_loop() -> Callable[..., None] | None:
    """A compiled loop that calls the BLAS's dgemm ``count`` times: C = A @ B, no Python between."""
    dgemm = blas_dgemm()
    if dgemm is None:
        return None
    row_major, no_trans = 101, 111  # CblasRowMajor, CblasNoTrans

    @numba.njit
    def loop(a, b, c, count):
        n = a.shape[0]
        for _ in range(count):
            dgemm(
                row_major, no_trans, no_trans, n, n, n,
                1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n,
            )  # fmt: skip

    return loop


def dispatch_rows(
    sizes: Sequence[int] = (2, 4, 16), repeats: int = 7, calls: int = 1000
) -> list[dict[str, Any]]:
    """Where the time of one small float64 ``a @ b`` goes, per call:

    numpy a @ b       the whole call from Python: argument checks, dtype and shape resolution,
                      the output's allocation, then the BLAS
    numpy np.add      a numpy call that never reaches a BLAS (into a buffer it is given): the
                      floor any call from Python into numpy pays
    BLAS alone        the same BLAS's dgemm called ``calls`` times from a compiled loop (numba):
                      no Python, no numpy; skipped where blas_dgemm() finds no dgemm
    """
    loop = _dgemm_loop()
    rows = []
    for n in sizes:
        a, b = operands(n, "float64")
        out = np.empty((n, n))
        cases = {
            "numpy a @ b": (lambda: a @ b, 1),
            "numpy np.add": (lambda: np.add(a, b, out=out), 1),
        }
        if loop is not None:
            loop(a, b, out, 1)  # compile
            if not np.allclose(out, a @ b):
                raise RuntimeError(
                    "the BLAS's dgemm, called directly, disagrees with numpy"
                )
            cases["BLAS alone"] = (lambda: loop(a, b, out, calls), calls)
        for method, (fn, count) in cases.items():
            t = bench.measure(fn, warmup=1, repeats=repeats, min_time=0.02)
            rows.append(
                {
                    "method": method,
                    "n": n,
                    "dtype": "float64",
                    "per_call_s": t.median_s / count,
                    **t.as_row(),
                }
            )
    return rows


def token_rows(
    width: int = 16,
    tokens: Sequence[int] = (16, 1024),
    dtype: str = "float64",
    repeats: int = 7,
) -> list[dict[str, Any]]:
    """microgpt's shape: one linear layer (a width x width matrix W) applied to T tokens' vectors.

    one matvec per token   ``W @ x`` for each token in a Python loop: T tiny calls (gemv)
    all tokens at once     ``X @ W.T`` with X the T x width stack of the vectors: one GEMM
    """
    bench.check_dtype(dtype)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((width, width)).astype(dtype)
    rows = []
    for count in tokens:
        x = rng.standard_normal((count, width)).astype(dtype)
        cases = {
            "one matvec per token": lambda: [w @ x[t] for t in range(count)],
            "all tokens at once": lambda: x @ w.T,
        }
        timings = bench.measure_interleaved(cases, repeats=repeats, min_time=0.02)
        for method, t in timings.items():
            rows.append(
                {
                    "method": method,
                    "width": width,
                    "tokens": count,
                    "dtype": dtype,
                    "per_token_s": t.median_s / count,
                    "gflops": bench.gflops(2 * width * width * count, t.median_s),
                    **t.as_row(),
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# exercises: each checker returns a short message, or raises AssertionError saying what is wrong


def reference_thread_threshold(
    dtype: str = "float64", low: int = 2, high: int = 1024
) -> int | None:
    """The smallest N at which numpy's BLAS splits an N x N product over several threads,
    found by bisection with threads_used; None if it uses one thread even at ``high``."""
    if threads_used(high, dtype) < 2:
        return None
    if threads_used(low, dtype) >= 2:
        return low
    while high - low > 1:  # threads_used(low) == 1, threads_used(high) >= 2
        middle = (low + high) // 2
        if threads_used(middle, dtype) >= 2:
            high = middle
        else:
            low = middle
    return high


def check_thread_threshold(n: int, dtype: str = "float64") -> str:
    """Exercise: the smallest N at which the BLAS uses more than one thread, within 10%.

    The checker measures at your N (the product must run on several threads) and at 90% of it
    (it must still run on one), with threads_used.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise AssertionError(f"the answer must be a matrix size N >= 2, got {n!r}")
    n = int(n)
    if machine.blas_threads() == 1:
        return (
            "nothing to find here: numpy's BLAS runs on one thread on this machine "
            "(one core, or its thread variable set to 1)"
        )
    below = max(1, int(0.9 * n))
    at_n = threads_used(n, dtype)
    if at_n < 2:
        raise AssertionError(
            f"at N = {n} the {dtype} product still ran on one thread: "
            "the threshold is higher than your answer"
        )
    at_below = threads_used(below, dtype)
    if at_below >= 2:
        raise AssertionError(
            f"at N = {below} (90% of your answer) the product already ran on {at_below} "
            "threads: the threshold is lower; narrow it down (bisect)"
        )
    return (
        f"right: {dtype} products of N = {below} run on one thread, N = {n} on {at_n}: "
        f"the threshold lies between them"
    )


def mlp_per_token(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """microgpt's MLP block as the scalar GPT computes it: one token at a time, two matvecs each.

    x is T x d (one row per token), w1 is 4d x d, w2 is d x 4d; the result is T x d.
    """
    return np.stack([w2 @ np.maximum(w1 @ token, 0.0) for token in x])


def reference_mlp_all_tokens(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The same for all T tokens with one product per layer: (T, d) @ (d, 4d), then @ (4d, d).

    Row t of x @ w1.T is w1 @ x[t], so transposing the weights turns T matvecs into one GEMM.
    """
    return np.maximum(x @ w1.T, 0.0) @ w2.T


def check_mlp_all_tokens(
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], width: int = 16
) -> str:
    """Exercise: fn(x, w1, w2) must equal mlp_per_token on every token count, and run (at
    256 tokens) at least 3x faster than the per-token loop, by making one call per layer."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4 * width, width))
    w2 = rng.standard_normal((width, 4 * width))
    for count in (1, 7, 256):
        x = rng.standard_normal((count, width))
        try:
            got = np.asarray(fn(x, w1, w2))
        except Exception as error:  # the reader's code: report what it raised, and where
            raise AssertionError(
                f"fn raised {type(error).__name__} for x of shape {x.shape}, w1 {w1.shape}, "
                f"w2 {w2.shape}: {error} (w1 @ x[t] for every t is x @ w1.T)"
            ) from error
        expected = mlp_per_token(x, w1, w2)
        if got.shape != expected.shape:
            raise AssertionError(
                f"for {count} token(s) fn returned shape {got.shape}, expected {expected.shape}"
                " (one row per token)"
            )
        if not np.allclose(got, expected, rtol=1e-10, atol=1e-10):
            worst = int(np.abs(got - expected).max(axis=1).argmax())
            raise AssertionError(
                f"for {count} token(s) the result differs from mlp_per_token, most at token "
                f"{worst}: check the transposes and where the ReLU goes"
            )
    # timed on the last, largest case: 256 tokens
    timings = bench.measure_interleaved(
        {
            "per token": lambda: mlp_per_token(x, w1, w2),
            "yours": lambda: fn(x, w1, w2),
        },
        repeats=5,
        min_time=0.01,
    )
    loop_s, yours_s = timings["per token"].median_s, timings["yours"].median_s
    if yours_s * 3 > loop_s:
        raise AssertionError(
            f"right values, but {loop_s / yours_s:.1f}x the per-token loop's speed at "
            f"{count} tokens: make one call per layer for all tokens, not one per token"
        )
    return (
        f"right, and {loop_s / yours_s:.0f}x faster than the per-token loop at {count} tokens: "
        f"{yours_s / count * 1e9:.0f} ns per token instead of {loop_s / count * 1e9:.0f} ns"
    )


# --------------------------------------------------------------------------------------------
# the suite


def suite_blas(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """numpy/BLAS matmul: GFLOP/s vs N (float32, float64; 1 thread and all), % of the peak
    (machine.measure_peak, with the CPU's widest vectors), the effect of operand layout, and
    the cost of a call: tiny products one by one vs stacked, numpy's dispatch vs the BLAS alone, and
    microgpt's per-token matvecs vs one product for all tokens.

    Options: sizes, dtypes, threads, repeats; quick: two sizes, 3 repeats.
    """
    quick = options.quick
    dtypes = [bench.check_dtype(d) for d in options.dtypes or bench.FLOAT_DTYPES]
    repeats = options.rounds
    sizes = options.sizes or (
        [32, 128]
        if quick
        else [32, 64, 128, 256, 512, 1024] + ([2048] if machine.FULL else [])
    )
    everything = options.threads or machine.blas_threads() or os.cpu_count() or 1
    peaks = []
    for peak in (
        machine.measure_peak(d, everything, 0.05 if quick else 0.2) for d in dtypes
    ):
        peaks += bench.peak_rows(peak)
    sweep = thread_sweep(sizes, dtypes, sorted({1, everything}), repeats)
    rows = peaks + [
        {"kind": "sweep", **row} for row in bench.with_percent_of_peak(sweep, peaks)
    ]
    n = 128 if quick else 512
    rows += [{"kind": "layout", **row} for row in layout_rows(n, dtypes[0], repeats)]
    tiny = [4, 16] if quick else [2, 4, 8, 16, 32, 64]
    overhead = call_overhead_rows(tiny, 100 if quick else 1000, dtypes[0], repeats)
    rows += [{"kind": "call-overhead", **row} for row in overhead]
    dispatch = dispatch_rows([4] if quick else [2, 4, 16], repeats)
    rows += [{"kind": "dispatch", **row} for row in dispatch]
    tokens = token_rows(16, [16] if quick else [16, 1024], dtypes[0], repeats)
    rows += [{"kind": "tokens", **row} for row in tokens]
    return rows
