"""Chapters 04-05's experiments: what each loop order touches, what the compiler made of it,
and the ladder that times every kernel.

    access_trace(order, n, steps)  the offsets of A, B and C the first iterations touch
    misses_per_iteration(order)    cache lines one inner-loop step brings in, from the strides
    n_filling(cache_bytes), n_past(cache_bytes)   the N where three matrices fill a cache
    count_float_ops(asm), assembly(fn, ...), vectorization_report(fn, ...)   SIMD, read from
                                   the machine code numba generates
    innermost_loops(asm), hot_loop(asm)   the loops in that code, and the busiest of them
    report_for_cpu(name, cpu)      the same report for another CPU, compiled in a fresh Python
    micro_kernel_rate(name)        a micro-kernel alone, on data in L1: its own ceiling
    blas_spin_trap(...)            OpenBLAS's spinning idle threads vs a parallel numba kernel
    threads_for(kernel, threads)   the thread settings one kernel is timed under
    run_ladder(...)                time kernels by N: one row per (kernel, N)
    interleaved_rows(settings, sizes)   the same, every (kernel, threads, N) timed round-robin
    crossover(rows, fast, slow)    the N from which one kernel stays faster, per round
    add_ratio_to_blas(rows)        each row against numpy at the same N and dtype
    suite_matmul(options)          python -m microgpt_lib.bench matmul
    check_*, reference_*           the chapters' exercises: checkers and reference solutions
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import numba
import numpy as np

from . import bench, kernels, machine
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
    order: str, itemsize: int = 8, line_bytes: int = 64, *, transposed_b: bool = False
) -> dict[str, float]:
    """Cache lines each inner-loop step of a loop order touches for A, B and C, when N is large.

    The inner loop's letter decides the strides: over j, B and C move along a row (stride 1,
    one new line every line_bytes / itemsize steps) and A stays put; over k, A moves along a
    row but B down a column (a new line every step); over i, A and C both move down columns.
    transposed_b: B is stored as its transpose (row j of the array is column j of B), as in
    C = A @ Bt.T; then "B" counts the lines of that array.
    """
    check_order(order)
    inner = order[-1]
    per_step = itemsize / line_bytes  # stride 1: a new line every (line / itemsize) steps
    # which of i, j, k index each operand's rows and columns
    strides = {
        "A": ("i", "k"),
        "B": ("j", "k") if transposed_b else ("k", "j"),
        "C": ("i", "j"),
    }
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


def n_filling(cache_bytes: float, itemsize: int = 8, matrices: int = 3) -> float:
    """The N at which `matrices` N x N matrices of `itemsize`-byte numbers fill cache_bytes."""
    return math.sqrt(cache_bytes / (matrices * itemsize))


def n_past(
    cache_bytes: float, itemsize: int = 8, factor: float = 1.5, step: int = 512
) -> int:
    """A size N at which three N x N matrices take `factor` times cache_bytes: the first
    multiple of `step` past that point, so a sweep reaches it."""
    return int(math.ceil(n_filling(cache_bytes * factor, itemsize) / step)) * step


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


def assembly(fn: Any, *args: Any, slp: bool = False) -> str:
    """The machine code numba generates for `fn` (a numba function) called with args like these.

    Only the function itself (and what the compiler inlined into it): not the wrappers numba
    adds to call it from Python. It compiles a fresh, uncached copy with the same options, since
    code loaded from numba's disk cache cannot be inspected. Nothing is run.
    slp: compile with LLVM's SLP vectorizer on, as the outer-product kernel is
    (kernels.slp_vectorizer).
    """
    if not hasattr(fn, "py_func") or not hasattr(fn, "targetoptions"):
        raise TypeError(f"fn must be a numba.njit function, got {type(fn).__name__}")
    options = {k: v for k, v in fn.targetoptions.items() if k != "nopython"}
    fresh = numba.njit(**options)(fn.py_func)
    with kernels.slp_vectorizer() if slp else contextlib.nullcontext():
        fresh.compile(tuple(numba.typeof(x) for x in args))
    compiled = fresh.overloads[fresh.signatures[0]]
    asm = compiled.library.get_asm_str()
    start = asm.find(f"\n{compiled.fndesc.mangled_name}:")
    if start < 0:  # unexpected layout: give the whole module rather than nothing
        return asm
    end = asm.find(".Lfunc_end", start)
    return asm[start : end if end > 0 else len(asm)]


def vectorization_report(fn: Any, *args: Any, slp: bool = False) -> dict[str, Any]:
    """How many vector and scalar floating-point instructions `fn` compiles to for these arguments.

    e.g. vectorization_report(micro_kernel_simd, *micro_kernel_arguments())["widest_bits"] is
    256 or 512 on a CPU with AVX-512, 256 with AVX2, 128 with NEON, 0 if the compiler did not
    vectorize. slp: as in assembly.
    """
    return count_float_ops(assembly(fn, *args, slp=slp))


# One row of ikj's inner loop, three ways: numba accepts negative indices (x[-1] is the last
# element), so an index it cannot prove non-negative is wrapped around on every access, and
# the vectorizer gives up; counting from 0, or with an unsigned index, removes the doubt.
def axpy_from(c, b, r, j0, j1):
    for j in range(j0, j1):  # j0 could be negative, as far as numba knows
        c[j] += r * b[j]


def axpy_from_zero(c, b, r, j0, j1):
    for j in range(j1 - j0):  # counts from 0
        c[j] += r * b[j]


def axpy_unsigned(c, b, r, j0, j1):
    for j in range(
        numba.uint64(j0), numba.uint64(j1)
    ):  # an index that cannot be negative
        c[j] += r * b[j]


INDEX_LOOPS = {
    "range(j0, j1)": axpy_from,
    "range(j1 - j0)": axpy_from_zero,
    "range(uint64(j0), uint64(j1))": axpy_unsigned,
}


def index_reports(n: int = 16) -> dict[str, dict[str, Any]]:
    """vectorization_report of each of INDEX_LOOPS, compiled for float64 rows of n numbers."""
    row = np.ones(n)
    return {
        name: vectorization_report(numba.njit(fn), row, row, 1.0, 0, n)
        for name, fn in INDEX_LOOPS.items()
    }


def micro_kernel_arguments(dtype: Any = np.float64, kc: int = 64) -> tuple:
    """Small example arguments for micro_kernel_simd / micro_kernel_scalar (for the reports)."""
    return (
        np.ones((MR, kc), dtype),
        np.ones((NR, kc), dtype),
        np.zeros((MR, NR), dtype),
        0,
        0,
    )


def outer_kernel_arguments(
    dtype: Any = np.float64,
    kc: int = 64,
    mr: int = kernels.OUTER_MR,
    nr: int = kernels.OUTER_NR,
) -> tuple:
    """Small example arguments for an outer-product micro-kernel: k-major slivers, a tile."""
    return (
        np.ones((kc, mr), dtype),
        np.ones((kc, nr), dtype),
        np.zeros((mr, nr), dtype),
        0,
        0,
    )


# a label at the start of a line, and a jump or branch to a label (x86-64 and AArch64)
_LABEL = re.compile(r"^(\.?[\w.$]+):")
_JUMP = re.compile(
    r"^\s+(?:j[a-z]+|b(?:\.[a-z]+)?|cbn?z|tbn?z)\s+(?:[^,\n]+,\s*)*([.\w$]+)\s*$"
)
_MULTIPLY = re.compile(
    r"\bv(?:fn?m(?:add|sub)\w*|mul)p([sd])\b[^\n]*?%([xyz])mm"  # x86 vector: width, type
    r"|\bv(?:fn?m(?:add|sub)\w*|mul)s[sd]\b"  # x86 scalar
    r"|\bf(?:mla|mls|mul)\s+v\d+\.(\d+)[dsh]"  # AArch64 vector: lanes
    r"|\bf(?:n?madd|n?msub|mul)\s+[dsh]\d+"  # AArch64 scalar
)


def innermost_loops(asm: str) -> list[str]:
    """The text of each innermost loop of assembly: a label, down to the last jump back to it
    (a backward jump is a loop), holding no other such loop."""
    lines = asm.splitlines()
    starts = {}
    for index, line in enumerate(lines):
        match = _LABEL.match(line)
        if match:
            starts[match.group(1)] = index
    spans = set()
    for index, line in enumerate(lines):
        match = _JUMP.match(line)
        if match and starts.get(match.group(1), index) < index:
            spans.add((starts[match.group(1)], index))
    inner = [
        (a, b)
        for a, b in spans
        if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)
    ]
    return ["\n".join(lines[a : b + 1]) for a, b in sorted(inner)]


def multiply_adds_in(asm: str) -> int:
    """Numbers multiplied by the multiply and FMA instructions of assembly (lanes x count)."""
    total = 0
    for kind, reg, arm_lanes in _MULTIPLY.findall(asm):
        if reg:
            total += {"x": 128, "y": 256, "z": 512}[reg] // (64 if kind == "d" else 32)
        else:
            total += int(arm_lanes) if arm_lanes else 1
    return total


def hot_loop(asm: str) -> dict[str, Any]:
    """The innermost loop with the most floating-point work, and what one trip round it does.

    Returns count_float_ops of the loop, plus "multiply_adds_per_trip" (numbers multiplied by
    one trip, summed over its instructions) and "elsewhere" (count_float_ops of the rest of
    the function: set-up, remainder loops, horizontal reductions).
    """
    loops = innermost_loops(asm)
    if not loops:
        return {
            **count_float_ops(""),
            "multiply_adds_per_trip": 0,
            "elsewhere": count_float_ops(asm),
        }
    busiest = max(loops, key=multiply_adds_in)
    return {
        **count_float_ops(busiest),
        "multiply_adds_per_trip": multiply_adds_in(busiest),
        "elsewhere": count_float_ops(asm.replace(busiest, "")),
    }


AVX2_ONLY = (  # an AVX2 CPU's features, for compiling as if on one (NUMBA_CPU_FEATURES)
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,"
    "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
    "-avx512f,-avx512vl,-avx512bw,-avx512dq,-avx512cd"
)
_PROBE = (
    "import json; from microgpt_lib import kernels, kernels_lab as lab; "
    "fn, args, slp = {{'dot': (kernels.micro_kernel_simd, lab.micro_kernel_arguments(), False), "
    "'outer': (kernels.outer_micro_kernel, lab.outer_kernel_arguments(), True)}}[{name!r}]; "
    "print(json.dumps(lab.vectorization_report(fn, *args, slp=slp)))"
)


def report_for_cpu(
    name: str, cpu: str = "haswell", features: str = AVX2_ONLY, timeout: float = 120.0
) -> dict[str, Any] | None:
    """vectorization_report of the "dot" or "outer" micro-kernel compiled for another x86 CPU.

    numba fixes its target when it starts, so a fresh Python compiles the kernel with
    NUMBA_CPU_NAME and NUMBA_CPU_FEATURES set (default: an AVX2 CPU, 16 vector registers).
    Nothing runs; None if the compilation failed (or this is not an x86-64 machine).
    """
    if name not in ("dot", "outer"):
        raise ValueError(f"name must be 'dot' or 'outer', got {name!r}")
    if machine.cpu_info()["machine"] not in ("x86_64", "AMD64"):
        return None
    env = {
        **os.environ,
        "NUMBA_CPU_NAME": cpu,
        "NUMBA_CPU_FEATURES": features,
        "NUMBA_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"microgpt-numba-{cpu}"),
    }
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(name=name)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=True,
        )
        report = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    report["vector_ops"] = {int(bits): n for bits, n in report["vector_ops"].items()}
    return report


@numba.njit
def _repeat_dot(a_pack, b_pack, c, calls):
    for _ in range(calls):
        kernels.micro_kernel_simd(a_pack, b_pack, c, 0, 0)


@numba.njit
def _repeat_outer(a_sliver, b_sliver, c, calls):
    for _ in range(calls):
        kernels.outer_micro_kernel(a_sliver, b_sliver, c, 0, 0)


def micro_kernel_rate(
    name: str, kc: int = 256, repeats: int = 5, seconds: float = 0.05
) -> float:
    """GFLOP/s of the "dot" or "outer" micro-kernel alone, called again and again on the same
    float64 data (kc values of k, all in L1): the ceiling the packed kernel around it can reach."""
    choices = {
        "dot": (_repeat_dot, micro_kernel_arguments(kc=kc), MR * NR),
        "outer": (
            _repeat_outer,
            outer_kernel_arguments(kc=kc),
            kernels.OUTER_MR * kernels.OUTER_NR,
        ),
    }
    if name not in choices:
        raise ValueError(f"name must be 'dot' or 'outer', got {name!r}")
    repeat, (a, b, c, _, _), tile = choices[name]
    args = (a, b, c)
    with kernels.slp_vectorizer():
        repeat(*args, 1)  # compile
    calls = max(1, int(seconds * 20e9 / (2 * tile * kc)))  # about `seconds` at 20 GFLOP/s
    timing = bench.measure(lambda: repeat(*args, calls), repeats=repeats)
    return bench.gflops(2 * tile * kc * calls, timing.median_s)


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


def _call_on(k: Kernel, threads: int | None, a: np.ndarray, b: np.ndarray) -> Callable:
    """A call of k(a, b) on its threads (inside interleaved_rows' one-thread BLAS limit)."""
    if k.parallel and k.family != "blas" and threads is not None:

        def call():
            with machine.numba_threads(threads):
                k(a, b)

    else:

        def call():
            k(a, b)

    return call


def interleaved_rows(
    settings: list[str | tuple[str, int | None]],
    sizes: list[int],
    dtype: str = "float64",
    *,
    repeats: int = 7,
    min_time: float = 0.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time kernels on N x N products round-robin (bench.measure_interleaved): one sample of
    every setting at every N per round, so that a change in the machine's load hits them all
    alike. One row per setting and N, like run_ladder's, plus times_s: one sample per round,
    in the same order for every row.

    settings  kernel names, or (name, threads): the threads of a parallel numba kernel
              (None: all); the other kernels run on one, numpy too: BLAS stays on one thread
              throughout, since its idle threads would spin on the cores the numba threads
              need (blas_spin_trap), and setting its limit around each call costs more than a
              small product. (run_ladder times numpy on several threads.)
    min_time  as in bench.measure: loop calls too short to time alone
    """
    chosen = [
        (kernel(item), None) if isinstance(item, str) else (kernel(item[0]), item[1])
        for item in settings
    ]
    for k, threads in chosen:
        if k.family == "blas" and threads not in (None, 1):
            raise ValueError(
                f"interleaved_rows times {k.name} on one thread only, got threads={threads}: "
                "use run_ladder for BLAS on several threads"
            )
    bench.check_dtype(dtype)
    if not sizes or any(not isinstance(n, (int, np.integer)) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((8, 8)).astype(dtype)
    cases, used = {}, {}
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        for k, threads in chosen:
            cases[k.name, threads, n] = _call_on(k, threads, a, b)
    with machine.limit_blas_threads(1):
        for k, threads in chosen:
            with threads_for(k, 1 if k.family == "blas" else threads) as count:
                k(small, small)  # compile (or load numba's cache) before the clock starts
                used[k.name, threads] = count
        timings = bench.measure_interleaved(cases, repeats=repeats, min_time=min_time)
    return [
        bench.matmul_row(
            name,
            kernel(name).family,
            n,
            dtype,
            used[name, threads],
            timing,
            times_s=timing.times_s,
        )
        for (name, threads, n), timing in timings.items()
    ]


def crossover(rows: list[dict[str, Any]], fast: str, slow: str) -> dict[str, Any]:
    """Where kernel `fast` overtakes kernel `slow`, from one interleaved_rows sweep over N.

    In each round of the sweep (the i-th sample of every row), the crossover is the smallest N
    from which `fast` took less time than `slow` at that N and at every larger one; None in a
    round where `fast` is not ahead at the largest N. Returns {"per_round": [...], "median",
    "low", "high" (over the rounds with a crossover: a size of the sweep each, or None),
    "never" (rounds without one)}.
    """
    times = {(r["kernel"], r["n"]): r["times_s"] for r in rows if "times_s" in r}
    sizes = sorted(
        {n for name, n in times if name == fast}
        & {n for name, n in times if name == slow}
    )
    if not sizes:
        raise ValueError(
            f"no sizes with both {fast!r} and {slow!r} rows (from interleaved_rows)"
        )
    rounds = min(len(times[name, n]) for name in (fast, slow) for n in sizes)
    per_round = []
    for r in range(rounds):
        ahead = [times[fast, n][r] < times[slow, n][r] for n in sizes]
        found = None
        for index in range(len(sizes) - 1, -1, -1):  # walk down from the largest N
            if not ahead[index]:
                break
            found = sizes[index]
        per_round.append(found)
    seen = sorted(n for n in per_round if n is not None)
    return {
        "per_round": per_round,
        "median": seen[(len(seen) - 1) // 2] if seen else None,
        "low": seen[0] if seen else None,
        "high": seen[-1] if seen else None,
        "never": per_round.count(None),
    }


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


def default_sizes(caches: dict[str, int] | None = None) -> list[int]:
    """The matmul suite's sizes: powers of two and the sizes between them (a power of two is a
    worst case for cache sets, chapter 04), up to 2048, and one size past the L3 cache that
    the operating system reports (three N x N float64 matrices 1.5 times its size)."""
    l3 = (caches or machine.cache_sizes())["L3"]
    sizes = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
    return sorted(set(sizes) | {max(2048, n_past(l3))})


def suite_matmul(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """The whole ladder: pure Python, every numba kernel, numpy/BLAS; with peak and bandwidth rows.

    Every kernel runs at all threads; the parallel ones and numpy also at fewer threads (for
    the scaling plot and the size below which threads lose). Options: sizes (default:
    default_sizes(), past L3), dtypes (float64, float32), threads, repeats, python_max_n;
    quick: N <= 256, 3 repeats. A kernel is skipped at an N where one call would take more
    than a minute (from its time at the N before).
    """
    limit = options.threads or numba.config.NUMBA_NUM_THREADS
    sizes = options.sizes or ([32, 64, 128, 256] if options.quick else default_sizes())
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


# --------------------------------------------------------------------------------------------
# exercises: a checker for each (it returns a message on success, raises AssertionError)

# chapter 04, exercise 1: the six orders, fastest first, as section 4's model ranks them
REFERENCE_RANKING = ("ikj", "kij", "ijk", "jik", "jki", "kji")


def check_ranking(
    predicted: list[str], n: int = 300, *, margin: float = 1.5, repeats: int = 3
) -> str:
    """Check a predicted ranking of the six compiled loop orders (fastest first) against the
    clock at N x N: the orders are timed round-robin, and a prediction is wrong where it puts
    an order ahead of one that measured more than `margin` times faster. Closer than that, a
    re-run could swap the two, and either order is accepted."""
    orders = list(predicted)
    if sorted(orders) != sorted(kernels.LOOP_ORDERS):
        raise AssertionError(
            f"the prediction must list each of the six orders once "
            f"({', '.join(kernels.LOOP_ORDERS)}), got {orders}"
        )
    if not isinstance(n, (int, np.integer)) or not 16 <= n <= 1024:
        raise ValueError(f"n must be an integer from 16 to 1024, got {n!r}")
    rows = interleaved_rows([f"numba-{o}" for o in orders], [int(n)], repeats=repeats)
    rate = {r["kernel"][len("numba-") :]: r["gflops"] for r in rows}
    measured = ", ".join(
        f"{o} {rate[o]:.2f}" for o in sorted(rate, key=rate.get, reverse=True)
    )
    for index, ahead in enumerate(orders):
        for behind in orders[index + 1 :]:
            if rate[behind] > margin * rate[ahead]:
                raise AssertionError(
                    f"at N = {n} you ranked {ahead} ({rate[ahead]:.2f} GFLOP/s) above {behind}, "
                    f"which measured {rate[behind] / rate[ahead]:.1f}x faster "
                    f"({rate[behind]:.2f}). Measured, fastest first: {measured} GFLOP/s"
                )
    return f"your ranking holds at N = {n}. Measured, fastest first: {measured} GFLOP/s"


# chapter 04, exercise 2: cache lines per inner-loop step when B is stored transposed,
# worked out by hand (the inner loop's letter decides; Bt's rows are indexed by j, its columns
# by k): over k, A and Bt both move along a row; over j, Bt moves down a column; over i, A and
# C move down columns
REFERENCE_TRANSPOSED_LINES = {
    "ijk": 0.25,
    "jik": 0.25,
    "ikj": 1.125,
    "kij": 1.125,
    "jki": 2.0,
    "kji": 2.0,
}


def check_transposed_lines(table: dict[str, float]) -> str:
    """Check a table order -> new cache lines per inner-loop step (A, B and C together) for
    C = A @ B with B stored as its transpose Bt (Bt[j][k] = B[k][j]): float64, 64-byte lines,
    large N, as in misses_per_iteration."""
    if not isinstance(table, dict) or sorted(table) != sorted(kernels.LOOP_ORDERS):
        raise AssertionError(
            f"give a dict with one entry per order ({', '.join(kernels.LOOP_ORDERS)}), "
            f"got {table!r}"
        )
    for order in kernels.LOOP_ORDERS:
        want = misses_per_iteration(order, transposed_b=True)
        if not math.isclose(float(table[order]), want["total"], abs_tol=1e-9):
            raise AssertionError(
                f"{order}: you have {table[order]} lines per step. Its inner loop runs over "
                f"{order[-1]}: which of A, Bt and C move along a row (1/8 of a line per step), "
                f"down a column (a line per step), or not at all? "
                f"(A {want['A']:g} + Bt {want['B']:g} + C {want['C']:g})"
            )
    return (
        "right: with B transposed, ijk and jik need the fewest lines (a row of A and a row of "
        "Bt), and ikj and kij walk down Bt's columns. Layout decides the best order, not the "
        "letters."
    )


# chapter 05, exercise 1: an outer-product micro-kernel with a 4 x 8 tile
@numba.njit(fastmath={"contract"})
def reference_micro_kernel_4x8(a_sliver, b_sliver, c, i, j):
    """C[i:i+4, j:j+8] += a_sliver.T @ b_sliver: kernels.outer_micro_kernel with half the rows."""
    c0, c1 = kernels.load_row(c, i, j), kernels.load_row(c, i + 1, j)
    c2, c3 = kernels.load_row(c, i + 2, j), kernels.load_row(c, i + 3, j)
    for p in range(a_sliver.shape[0]):
        x, y = a_sliver[p], b_sliver[p]  # 4 numbers of A's column p, 8 of B's row p
        c0, c1 = kernels.axpy_row(c0, x[0], y), kernels.axpy_row(c1, x[1], y)
        c2, c3 = kernels.axpy_row(c2, x[2], y), kernels.axpy_row(c3, x[3], y)
    for r, row in enumerate((c0, c1, c2, c3)):
        kernels.store_row(c, i + r, j, row)


def _reorders_sums(fastmath: Any) -> bool:
    """Whether numba's fastmath option lets LLVM reorder additions (reassociation)."""
    if fastmath is True:
        return True
    return bool(fastmath) and bool({"fast", "reassoc"} & set(fastmath))


def check_micro_kernel(
    micro_kernel: Any, mr: int = 4, nr: int = 8, *, n: int = 384, repeats: int = 5
) -> str:
    """Check an outer-product micro-kernel (a_sliver, b_sliver, c, i, j) for an mr x nr tile:
    compiled without reassociation, correct inside kernels.outer_packed_matmul on shapes that
    are not whole tiles, and (where this machine's compiler vectorizes the library's own
    outer-product kernel) clearly faster than the dot-product kernel without SIMD at N x N."""
    if not hasattr(micro_kernel, "py_func") or not hasattr(micro_kernel, "targetoptions"):
        raise AssertionError(
            "the micro-kernel must be a numba function: decorate it with "
            '@numba.njit(fastmath={"contract"})'
        )
    options = {k: v for k, v in micro_kernel.targetoptions.items() if k != "nopython"}
    if _reorders_sums(options.get("fastmath")):
        raise AssertionError(
            f"fastmath={options.get('fastmath')!r} lets the compiler reorder the sums, and an "
            'outer-product kernel needs no such licence: use fastmath={"contract"} (an FMA '
            "for x * y + s, nothing reordered)"
        )
    fresh = numba.njit(**options)(micro_kernel.py_func)  # compiled below, with SLP on
    rng = np.random.default_rng(0)
    small = kernels.Tiles(
        mc=4 * mr, kc=16, nc=4 * nr
    )  # several blocks in every dimension
    for m, k, cols in ((mr, 5, nr), (13, 17, 11), (66, 41, 130)):
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, cols))
        for tiles in (small, None):
            try:
                c = kernels.outer_packed_matmul(
                    a, b, threads=1, tiles=tiles, micro_kernel=fresh, mr=mr, nr=nr
                )
            except Exception as error:  # the reader's code: say where it broke
                raise AssertionError(
                    f"outer_packed_matmul with your micro-kernel failed on A {m}x{k} @ "
                    f"B {k}x{cols}: {type(error).__name__}: {error}"
                ) from None
            error = np.max(np.abs(c - a @ b)) / np.max(np.abs(a) @ np.abs(b))
            if not error < 1e-12:
                raise AssertionError(
                    f"wrong product for A {m}x{k} @ B {k}x{cols} (relative error {error:.2g}): "
                    f"row r of the tile must gain a_sliver[p, r] * b_sliver[p] for every p, "
                    f"added to what C held, for all {mr} rows and {nr} columns"
                )
    library = vectorization_report(
        kernels.outer_micro_kernel, *outer_kernel_arguments(), slp=True
    )
    if not library["vectorized"]:
        return (
            "correct. (This machine's compiler does not vectorize the library's "
            "outer-product kernel either, so its speed is not checked here.)"
        )
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    cases = {
        "yours": lambda: kernels.outer_packed_matmul(
            a, b, threads=1, micro_kernel=fresh, mr=mr, nr=nr
        ),
        "numba-packed-scalar": lambda: KERNELS["numba-packed-scalar"](a, b),
        "numba-outer": lambda: KERNELS["numba-outer"](a, b),
    }
    with machine.limit_blas_threads(1):
        timings = bench.measure_interleaved(cases, repeats=repeats)
    rate = {
        name: bench.gflops(bench.matmul_flops(n, n, n), t.median_s)
        for name, t in timings.items()
    }
    ratio = rate["yours"] / rate["numba-packed-scalar"]
    if ratio < 1.25:
        raise AssertionError(
            f"correct, but at N = {n} it runs at {rate['yours']:.1f} GFLOP/s, not clearly "
            f"faster than the dot-product kernel without SIMD ({rate['numba-packed-scalar']:.1f}"
            f"). Did it vectorize? kernels_lab.vectorization_report(your_kernel, "
            f"*kernels_lab.outer_kernel_arguments(mr={mr}, nr={nr}), slp=True) tells: keep each "
            f"row of the tile one tuple, updated by one axpy_row per step"
        )
    return (
        f"correct, with no reordered sums, and {rate['yours']:.1f} GFLOP/s at N = {n} on one "
        f"thread: {ratio:.1f}x the dot-product kernel without SIMD "
        f"({rate['numba-packed-scalar']:.1f}); the library's {kernels.OUTER_MR}x"
        f"{kernels.OUTER_NR} tile ran at {rate['numba-outer']:.1f}"
    )


# chapter 05, exercise 2: one thread for small products, all of them for big ones
PARALLEL_FROM_N = (
    96  # the reference's threshold; a reader picks theirs from the crossover
)


def reference_dispatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A @ B: the simple ikj loop on one thread below about PARALLEL_FROM_N^3 multiply-adds,
    the parallel packed kernel above, where starting the threads pays."""
    a, b = kernels.check_operands(a, b)
    work = a.shape[0] * a.shape[1] * b.shape[1]
    return KERNELS["numba-ikj" if work < PARALLEL_FROM_N**3 else BEST_KERNEL](a, b)


def check_dispatch(
    matmul: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    small: int = 16,
    large: int = 512,
    repeats: int = 7,
) -> str:
    """Check a size-aware matmul: right answers, no slower than 2x the one-thread ikj loop
    on a small product (it should not start threads there), and no slower than 1.3x the
    parallel packed kernel on a large one (it should use them), both timed round-robin."""
    rng = np.random.default_rng(0)
    for m, k, n in ((1, 1, 1), (13, 17, 11), (66, 41, 130), (200, 150, 170)):
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        c = np.asarray(matmul(a, b))
        if c.shape != (m, n) or not np.allclose(c, a @ b, rtol=1e-10, atol=1e-10):
            raise AssertionError(f"wrong product for A {m}x{k} @ B {k}x{n}")
    threads = numba.config.NUMBA_NUM_THREADS
    lines = []
    for n, rival, limit in ((small, "numba-ikj", 2.0), (large, BEST_KERNEL, 1.3)):
        if n == large and threads == 1:
            break  # one core: nothing to gain from threads
        a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
        with machine.limit_blas_threads(1):
            run = KERNELS[rival]
            t = bench.measure_interleaved(
                {"yours": lambda: matmul(a, b), rival: lambda: run(a, b)},
                repeats=repeats,
                min_time=0.002,
            )
        mine, theirs = t["yours"].median_s, t[rival].median_s
        if mine > limit * theirs:
            hint = (
                "starting threads costs more than so small a product: stay on one thread"
                if n == small
                else "a product this big pays for the threads: use them"
            )
            raise AssertionError(
                f"at N = {n} yours takes {mine * 1e6:.1f} µs, {rival} {theirs * 1e6:.1f} µs "
                f"({mine / theirs:.1f}x): {hint}"
            )
        lines.append(f"N = {n}: {mine * 1e6:.1f} µs against {rival}'s {theirs * 1e6:.1f}")
    return "right answers, and the right side of the crossover: " + "; ".join(lines)
