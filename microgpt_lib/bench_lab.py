"""Chapter 00's experiments: the slow, obvious matmul, and the first two suites.

naive_matmul(a, b)          C = A @ B with three Python loops: the reference
suite_peak(options)         the machine's measured FMA peak: python -m microgpt_lib.bench peak
suite_matmul_intro(options) pure Python vs numpy, float64: the first ladder ("matmul-intro")
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import bench, machine


def naive_matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """C = A @ B with three Python loops (i, j, k): the slow, obvious reference."""
    n, k, m = len(a), len(b), len(b[0])
    if any(len(row) != k for row in a):
        raise ValueError(
            f"shapes do not match: A rows must have {k} columns (B has {k} rows)"
        )
    c = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            total = 0.0
            for p in range(k):
                total += a[i][p] * b[p][j]
            c[i][j] = total
    return c


def suite_peak(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """The machine's measured FMA peak, FP64 and FP32, one thread and all threads.

    Options: dtypes, threads.
    """
    rows = []
    for dtype in options.dtypes or bench.FLOAT_DTYPES:
        peak = machine.measure_peak(dtype, threads=options.threads)
        if "warning" in peak:
            print("warning:", peak["warning"], file=sys.stderr)
        rows += bench.peak_rows(peak)
    return rows


def suite_matmul_intro(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """A first matmul ladder: pure Python triple loop vs numpy (BLAS), float64.

    Options: sizes (default 16 ... 128), repeats (for numpy; Python gets 3), python_max_n.
    """
    rng = np.random.default_rng(0)
    rows = []
    for n in options.sizes or [16, 32, 64, 128]:
        a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
        al, bl = a.tolist(), b.tolist()
        if n <= options.python_max_n:
            t = bench.measure(lambda: naive_matmul(al, bl), warmup=1, repeats=3)
            rows.append(bench.matmul_row("python-ijk", "python", n, "float64", 1, t))
        t = bench.measure(lambda: a @ b, warmup=1, repeats=options.repeats, min_time=0.01)
        rows.append(
            bench.matmul_row("numpy", "blas", n, "float64", machine.blas_threads(), t)
        )
    return rows
