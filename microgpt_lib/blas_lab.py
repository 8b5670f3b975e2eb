"""Chapter 06's experiments: numpy's @ timed by size, threads, operand layout and call count.

operands(n, dtype)        random N x N matrices (or a stack of them), the same on every run
matmul_rows(...)          GFLOP/s of numpy's @ by N and dtype, on the threads running now
thread_sweep(...)         the same for several thread counts (in-process, or in a child process)
layout_rows(...)          one product with transposed and strided operands
call_overhead_rows(...)   tiny products: one call each in a Python loop vs one stacked call
suite_blas(options)       python -m microgpt_lib.bench blas: all of the above, with the peak
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from . import bench, machine
from .blas import blas_library, run_python, thread_env

# --------------------------------------------------------------------------------------------
# measurements


def operands(
    n: int, dtype: str, batch: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (n, n) if batch is None else (batch, n, n)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(
        dtype
    )


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


def layout_rows(
    n: int = 512, dtype: str = "float64", repeats: int = 7, threads: int | None = 1
) -> list[dict[str, Any]]:
    """One N x N product with operands in different memory layouts, on ``threads`` BLAS threads.

    Transposes are free (BLAS takes a 'transposed' flag and packs either way); a strided view
    cannot be handed to BLAS at all, so numpy copies it into a contiguous buffer first. One thread
    by default: the comparison is about layout, and one thread is the least disturbed by a busy
    machine (where threadpoolctl cannot set it, the BLAS runs on what it has).
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
    }
    rows = []
    with machine.limit_blas_threads(
        threads
    ):  # where it cannot be set, the BLAS runs what it has
        running = machine.blas_threads()
        for layout, fn in cases.items():
            t = bench.measure(fn, warmup=1, repeats=repeats, min_time=0.02)
            rows.append(
                bench.matmul_row(
                    "numpy-matmul", "blas", n, dtype, running, t, layout=layout
                )
            )
    return rows


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


# --------------------------------------------------------------------------------------------
# the suite


def suite_blas(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """numpy/BLAS matmul: GFLOP/s vs N (float32, float64; 1 thread and all), % of the measured
    peak, the effect of operand layout, and the per-call overhead of tiny products.

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
    for dtype in dtypes:
        peaks += bench.peak_rows(
            machine.measure_peak(
                dtype, threads=everything, seconds=0.05 if quick else 0.2
            )
        )
    sweep = thread_sweep(sizes, dtypes, sorted({1, everything}), repeats)
    rows = peaks + [
        {"kind": "sweep", **row} for row in bench.with_percent_of_peak(sweep, peaks)
    ]
    n = 128 if quick else 512
    rows += [{"kind": "layout", **row} for row in layout_rows(n, dtypes[0], repeats)]
    tiny = [4, 16] if quick else [2, 4, 8, 16, 32, 64]
    overhead = call_overhead_rows(tiny, 100 if quick else 1000, dtypes[0], repeats)
    rows += [{"kind": "call-overhead", **row} for row in overhead]
    return rows
