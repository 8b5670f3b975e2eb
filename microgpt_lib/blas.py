"""BLAS from Python: which library numpy's ``@`` calls, how many threads it runs, what a call costs.

    blas_library()            'openblas', 'accelerate', 'mkl', 'blis', ...: numpy's build record
    describe_blas()           machine.blas_info() + the library, its threads, how to change them
    thread_env(n)             environment variables that fix BLAS threads *before* numpy is imported
    run_python(code, env)     run a snippet in a fresh interpreter with those variables set

BLAS threads are read and set with machine.blas_threads() and machine.limit_blas_threads(n);
the chapter's measurements are in blas_lab.

Why the subprocess helper: threadpoolctl changes OpenBLAS/MKL/BLIS threads in a running process,
but cannot see Apple's Accelerate, whose thread count is read once, from VECLIB_MAXIMUM_THREADS,
when the library loads. So on a Mac a 1-thread measurement needs a fresh interpreter started with
that variable set; blas_lab.thread_sweep does that wherever threadpoolctl cannot reach the BLAS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import machine

ROOT = Path(__file__).resolve().parent.parent

# The environment variable each BLAS reads (once, at load time) for its thread count.
THREAD_ENV_VARS = {
    "openblas": "OPENBLAS_NUM_THREADS",
    "mkl": "MKL_NUM_THREADS",
    "accelerate": "VECLIB_MAXIMUM_THREADS",
    "blis": "BLIS_NUM_THREADS",
}


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
    info = info if info is not None else machine.blas_info()
    family = parse_blas_name(info.get("blas_name"))
    if family.startswith("unknown"):
        pools = machine.blas_pools(info)
        if pools:
            family = parse_blas_name(pools[0].get("internal_api"))
    return family


def describe_blas() -> dict[str, Any]:
    """Everything the chapter says about this machine's BLAS, in one dict: machine.blas_info()
    plus the library, its threads and how to change them."""
    info = machine.blas_info()
    library = blas_library(info)
    pools = machine.blas_pools(info)
    return {
        **info,
        "library": library,
        "threads": max(p["num_threads"] for p in pools) if pools else None,
        "architecture": pools[0].get("architecture")
        if pools
        else None,  # OpenBLAS's kernel set
        "threadpoolctl_controls_it": bool(pools),
        "thread_env_var": THREAD_ENV_VARS.get(library),
    }


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
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the child Python failed (exit {result.returncode}):\n{result.stderr[-2000:]}"
        )
    return result.stdout
