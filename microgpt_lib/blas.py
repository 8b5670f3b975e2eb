"""BLAS from Python: which library numpy's ``@`` calls, how many threads it runs, what a call costs.

    blas_library()            'openblas', 'accelerate', 'mkl', 'blis', ... read from numpy's build record
    describe_blas()           bench.blas_info() plus the library, its threads and how to change them
    blas_threads()            threads the BLAS pool runs now (None where threadpoolctl cannot see it)
    limit_blas_threads(n)     context manager: run numpy's BLAS on n threads (threadpoolctl)
    thread_env(n)             environment variables that fix BLAS threads *before* numpy is imported
    run_python(code, env)     run a snippet in a fresh interpreter with those variables set
    matmul_rows(...)          GFLOP/s of numpy's @ by N and dtype, on the threads running now
    thread_sweep(...)         the same for several thread counts (in-process, or in a child process)
    layout_rows(...)          one product with transposed and strided operands
    call_overhead_rows(...)   tiny products: one call each in a Python loop vs one stacked call
    suite_blas(options)       the `blas` bench suite: all of the above, with the measured peak

Why the subprocess helper: threadpoolctl changes OpenBLAS/MKL/BLIS threads in a running process,
but cannot see Apple's Accelerate, whose thread count is read once, from VECLIB_MAXIMUM_THREADS,
when the library loads. So on a Mac a 1-thread measurement needs a fresh interpreter started with
that variable set; thread_sweep does that by itself wherever threadpoolctl cannot reach the BLAS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import bench
from .bench import blas_threads  # noqa: F401  (part of this module's API too)

ROOT = Path(__file__).resolve().parent.parent

# The environment variable each BLAS reads (once, at load time) for its thread count.
THREAD_ENV_VARS = {
    "openblas": "OPENBLAS_NUM_THREADS",
    "mkl": "MKL_NUM_THREADS",
    "accelerate": "VECLIB_MAXIMUM_THREADS",
    "blis": "BLIS_NUM_THREADS",
}

BLAS_DTYPES = ("float64", "float32")


# --------------------------------------------------------------------------------------------
# which BLAS, and its threads


def parse_blas_name(name: str | None) -> str:
    """Map a build-config or threadpoolctl name to a family: 'scipy-openblas64' -> 'openblas'."""
    text = (name or "").lower()
    for family in ("openblas", "accelerate", "mkl", "blis"):
        if family in text:
            return family
    if "veclib" in text:
        return "accelerate"
    return text or "unknown"


def blas_library(info: dict[str, Any] | None = None) -> str:
    """The BLAS family numpy was built against: 'openblas', 'accelerate', 'mkl', 'blis' or other.

    numpy >= 2 records it (np.show_config(mode="dicts")); if that is missing, the name of the
    BLAS pool threadpoolctl found in this process is used instead.
    """
    info = info if info is not None else bench.blas_info()
    family = parse_blas_name(info.get("blas_name"))
    if family.startswith("unknown"):
        pools = [p for p in info.get("threadpools", []) if p.get("user_api") == "blas"]
        if pools:
            family = parse_blas_name(pools[0].get("internal_api"))
    return family


def _blas_pools() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [p for p in threadpool_info() if p.get("user_api") == "blas"]


def describe_blas() -> dict[str, Any]:
    """Everything the chapter says about this machine's BLAS, in one dict."""
    info = bench.blas_info()
    library = blas_library(info)
    pools = [p for p in info.get("threadpools", []) if p.get("user_api") == "blas"]
    return {
        **info,
        "library": library,
        "threads": max(p["num_threads"] for p in pools) if pools else None,
        "architecture": pools[0].get("architecture") if pools else None,  # OpenBLAS's kernel set
        "threadpoolctl_controls_it": bool(pools),
        "thread_env_var": THREAD_ENV_VARS.get(library),
    }


@contextlib.contextmanager
def limit_blas_threads(threads: int | None) -> Iterator[int | None]:
    """Run numpy's BLAS on ``threads`` threads inside the block (None: leave it as it is).

    Yields the thread count threadpoolctl reports inside the block. Raises RuntimeError where
    threadpoolctl cannot see the BLAS (Apple Accelerate): use thread_env() with run_python().
    """
    if threads is None:
        yield blas_threads()
        return
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if not _blas_pools():
        raise RuntimeError(
            f"threadpoolctl cannot see numpy's BLAS ({blas_library()}), so it cannot set its threads; "
            f"start Python with {thread_env(threads)} instead (see run_python / thread_sweep)")
    with bench.blas_threads_limited(threads):
        yield blas_threads()


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that give every common BLAS (and OpenMP) ``threads`` threads.

    They are read once, when the library loads: set them before Python starts (or in a child
    process's environment), not after ``import numpy``.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return {name: str(threads) for name in (*THREAD_ENV_VARS.values(), "OMP_NUM_THREADS")}


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run ``code`` in a fresh Python interpreter with extra environment variables; return stdout.

    The child imports numpy itself, so variables like VECLIB_MAXIMUM_THREADS take effect there.
    """
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"the child Python failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


# --------------------------------------------------------------------------------------------
# measurements


def _check_dtypes(dtypes: Sequence[str]) -> None:
    bad = [d for d in dtypes if d not in BLAS_DTYPES]
    if bad:
        raise ValueError(f"BLAS matmuls are measured in {', '.join(BLAS_DTYPES)}; got {', '.join(bad)}")


def _operands(n: int, dtype: str, batch: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (n, n) if batch is None else (batch, n, n)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def matmul_rows(sizes: Sequence[int], dtypes: Sequence[str] = BLAS_DTYPES, repeats: int = 7,
                threads: int | None = None) -> list[dict[str, Any]]:
    """GFLOP/s of ``a @ b`` for square N x N matrices, on the BLAS threads running now.

    ``threads`` is only the label for the rows when threadpoolctl cannot report the count.
    """
    _check_dtypes(dtypes)
    if any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    library, running = blas_library(), blas_threads() or threads
    rows = []
    for dtype in dtypes:
        for n in sizes:
            a, b = _operands(n, dtype)
            # min_time: repeat tiny products until a sample lasts 20 ms, so the clock can resolve them
            t = bench.measure(lambda: a @ b, warmup=1, repeats=repeats, min_time=0.02)
            rows.append({"kernel": "numpy-matmul", "family": "blas", "library": library, "n": n, "dtype": dtype,
                         "threads": running, **t.as_row(), "gflops": bench.gflops(bench.matmul_flops(n, n, n), t.median_s)})
    return rows


def thread_sweep(sizes: Sequence[int], dtypes: Sequence[str] = BLAS_DTYPES, thread_counts: Sequence[int] | None = None,
                 repeats: int = 7, isolate: bool | None = None) -> list[dict[str, Any]]:
    """matmul_rows for each thread count (default: 1 and all the BLAS runs now).

    In-process with threadpoolctl where it controls the BLAS; otherwise (Accelerate, or
    isolate=True) each thread count runs in a child interpreter started with thread_env(n).
    Each row says how its threads were set ("threads_set_by").
    """
    if thread_counts is None:
        everything = blas_threads() or os.cpu_count() or 1
        thread_counts = sorted({1, everything})
    in_process = bool(_blas_pools()) if isolate is None else not isolate
    rows = []
    for threads in thread_counts:
        if in_process:
            with limit_blas_threads(threads):
                found = matmul_rows(sizes, dtypes, repeats, threads)
        else:
            code = (f"import json; from microgpt_lib import blas; "
                    f"print(json.dumps(blas.matmul_rows({list(sizes)!r}, {list(dtypes)!r}, {repeats}, {threads})))")
            found = json.loads(run_python(code, env=thread_env(threads)).strip().splitlines()[-1])
        rows += [{**row, "threads_set_by": "threadpoolctl" if in_process else "environment"} for row in found]
    return rows


def layout_rows(n: int = 512, dtype: str = "float64", repeats: int = 7, threads: int | None = 1) -> list[dict[str, Any]]:
    """One N x N product with operands in different memory layouts, on ``threads`` BLAS threads.

    Transposes are free (BLAS takes a 'transposed' flag and packs either way); a strided view
    cannot be handed to BLAS at all, so numpy copies it into a contiguous buffer first. One thread
    by default: the comparison is about layout, and one thread is the least disturbed by a busy
    machine (where threadpoolctl cannot set it, the BLAS runs on what it has).
    """
    _check_dtypes([dtype])
    a, b = _operands(n, dtype)
    wide = np.random.default_rng(1).standard_normal((n, 2 * n)).astype(dtype)
    strided = wide[:, ::2]  # every other column: N x N, but not contiguous
    cases = {
        "a @ b": lambda: a @ b,
        "a.T @ b": lambda: a.T @ b,
        "a.T @ b.T": lambda: a.T @ b.T,
        "strided @ b": lambda: strided @ b,
    }
    rows = []
    with limit_blas_threads(threads if _blas_pools() else None) as running:
        for layout, fn in cases.items():
            t = bench.measure(fn, warmup=1, repeats=repeats, min_time=0.02)
            rows.append({"kernel": "numpy-matmul", "family": "blas", "layout": layout, "n": n, "dtype": dtype,
                         "threads": running, **t.as_row(), "gflops": bench.gflops(bench.matmul_flops(n, n, n), t.median_s)})
    return rows


def call_overhead_rows(sizes: Sequence[int] = (2, 4, 8, 16, 32, 64), batch: int = 1000, dtype: str = "float64",
                       repeats: int = 7) -> list[dict[str, Any]]:
    """Seconds per tiny N x N product: one call alone, ``batch`` calls in a Python loop, one stacked call.

    The stacked call ``A @ B`` on (batch, N, N) arrays crosses from Python into C once and loops
    over the batch there: the numpy version of "minimise bridge calls".
    """
    _check_dtypes([dtype])
    rows = []
    for n in sizes:
        A, B = _operands(n, dtype, batch=batch)
        a, b = A[0], B[0]
        cases = {
            "one call": (lambda: a @ b, 1),
            "python loop": (lambda: [A[i] @ B[i] for i in range(batch)], batch),
            "stacked": (lambda: A @ B, batch),
        }
        for method, (fn, products) in cases.items():
            t = bench.measure(fn, warmup=1, repeats=repeats, min_time=0.02)
            per_product = t.median_s / products
            rows.append({"kernel": "numpy-matmul", "family": "blas", "method": method, "n": n, "dtype": dtype,
                         "batch": products, "threads": blas_threads(), **t.as_row(), "per_product_s": per_product,
                         "gflops": bench.gflops(bench.matmul_flops(n, n, n), per_product)})
    return rows


def with_percent_of_peak(rows: list[dict[str, Any]], peaks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``peak_gflops`` and ``percent_of_peak`` to matmul rows, from measure_peak() per dtype.

    One thread is held against the one-core peak; several against the all-core peak when the
    counts match, else per-core peak x threads.
    """
    out = []
    for row in rows:
        peak = peaks.get(row.get("dtype"))
        threads = row.get("threads") or 1
        if peak is None or "gflops" not in row:
            out.append(row)
            continue
        if threads == 1:
            reference = peak["per_core_gflops"]
        elif threads == peak["threads"]:
            reference = peak["gflops"]
        else:
            reference = peak["per_core_gflops"] * threads
        out.append({**row, "peak_gflops": reference, "percent_of_peak": bench.percent_of_peak(row["gflops"], reference)})
    return out


# --------------------------------------------------------------------------------------------
# the suite


def suite_blas(options: argparse.Namespace) -> list[dict[str, Any]]:
    """numpy/BLAS matmul: GFLOP/s vs N (float32, float64; 1 thread and all), % of the measured
    peak, the effect of operand layout, and the per-call overhead of tiny products."""
    from .show import FULL

    quick = getattr(options, "quick", False)
    dtypes = options.dtypes or list(BLAS_DTYPES)
    _check_dtypes(dtypes)
    repeats = 3 if quick else options.repeats
    sizes = options.sizes or ([32, 128] if quick else [32, 64, 128, 256, 512, 1024] + ([2048] if FULL else []))
    everything = options.threads or blas_threads() or os.cpu_count() or 1
    peaks = {dtype: bench.measure_peak(dtype, threads=everything, seconds=0.05 if quick else 0.2) for dtype in dtypes}

    rows: list[dict[str, Any]] = []
    for dtype, peak in peaks.items():
        rows.append({"kernel": "fma-loop", "family": "peak", "dtype": dtype, "threads": 1, "gflops": peak["per_core_gflops"]})
        rows.append({"kernel": "fma-loop", "family": "peak", "dtype": dtype, "threads": peak["threads"], "gflops": peak["gflops"]})
    sweep = thread_sweep(sizes, dtypes, sorted({1, everything}), repeats)
    rows += [{"experiment": "sweep", **row} for row in with_percent_of_peak(sweep, peaks)]
    rows += [{"experiment": "layout", **row} for row in layout_rows(128 if quick else 512, dtypes[0], repeats)]
    overhead = call_overhead_rows([4, 16] if quick else [2, 4, 8, 16, 32, 64], 100 if quick else 1000, dtypes[0], repeats)
    rows += [{"experiment": "call-overhead", **row} for row in overhead]
    return rows
