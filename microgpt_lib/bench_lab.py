"""Chapter 00's experiments: the slow, obvious matmul, the first two suites, the exercises.

naive_matmul(a, b)          C = A @ B with three Python loops: the reference
suite_peak(options)         the machine's measured FMA peak: python -m microgpt_lib.bench peak
suite_matmul_intro(options) pure Python vs numpy, float64: the first ladder ("matmul-intro")
clock_resolution()          what perf_counter resolves and what a read costs, asked and measured
simd_width_bits(cpu)        the widest vector the CPU offers; reported_clock_ghz() the OS's clock
check_median_timer, check_matmul_gflops, check_peak_formula   the exercises' checkers
reference_median_timer, reference_matmul_gflops, reference_peak_gflops   their solutions
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

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
    """The machine's measured FMA peak, FP64 and FP32, one thread and all threads (with the
    CPU's widest vectors); and, where numba compiles narrower ones by default, one core's
    rate at that default width.

    Options: dtypes, threads.
    """
    rows = []
    for dtype in options.dtypes or bench.FLOAT_DTYPES:
        peak = machine.measure_peak(dtype, threads=options.threads)
        if "warning" in peak:
            print("warning:", peak["warning"], file=sys.stderr)
        rows += bench.peak_rows(peak)
        if "default_width_gflops" in peak:  # what numba's own choice of vectors reaches
            bits = peak["default_vector_bits"]
            rows.append(
                {
                    "kernel": f"fma-loop-{bits}-bit",
                    "family": "peak",
                    "dtype": dtype,
                    "threads": 1,
                    "gflops": peak["default_width_gflops"],
                    "vector_bits": bits,
                }
            )
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


# --------------------------------------------------------------------------------------------
# the clock


def clock_resolution(reads: int = 100_000) -> dict[str, Any]:
    """How finely time.perf_counter resolves, asked and measured.

    "reported_s" is what Python says (time.get_clock_info); "smallest_step_s" the smallest
    non-zero difference between two back-to-back reads (the larger of the clock's tick and the
    cost of a read); "read_s" what one read costs, with the loop around it, on average over
    `reads` reads in a row.
    """
    clock = time.perf_counter
    stamps = [clock() for _ in range(reads)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    steps = [g for g in gaps if g > 0]
    info = time.get_clock_info("perf_counter")
    return {
        "implementation": info.implementation,
        "reported_s": info.resolution,
        "smallest_step_s": min(steps) if steps else float("nan"),
        "read_s": (stamps[-1] - stamps[0]) / (reads - 1),
        "reads": reads,
    }


# --------------------------------------------------------------------------------------------
# the anatomy of the peak: cores x clock x flop per cycle


def simd_width_bits(cpu: dict[str, Any]) -> tuple[int | None, str]:
    """The widest vector register the CPU offers, in bits, and the flag that says so.

    From machine.cpu_info(): its "simd" flags on x86; on 64-bit Arm, NEON's 128 bits (every
    such core has it; the rarer SVE is not detected). (None, "unknown") where neither applies.
    """
    flags = cpu.get("simd") or []
    for flag, bits in (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse4_2", 128)):
        if flag in flags:
            return bits, flag
    if str(cpu.get("machine", "")).lower() in ("arm64", "aarch64"):
        return 128, "neon (64-bit Arm)"
    return None, "unknown"


def reported_clock_ghz() -> tuple[float | None, str]:
    """The clock the operating system reports, in GHz, and where it was read (None if none).

    Often the nominal (base) clock, not the one the core runs at under load: a busy core may
    run faster (turbo) or slower (heat, power limits). Linux: cpufreq's maximum if present,
    else the highest "cpu MHz" in /proc/cpuinfo; macOS: hw.cpufrequency_max (Intel Macs).
    """
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(cpufreq.read_text()) / 1e6, str(cpufreq)
    except (OSError, ValueError):
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
        mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
        if mhz:
            return max(mhz) / 1e3, "/proc/cpuinfo"
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.cpufrequency_max"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            if out.isdigit():
                return int(out) / 1e9, "sysctl hw.cpufrequency_max"
        except (OSError, subprocess.SubprocessError):
            pass
    return None, "not reported"


# --------------------------------------------------------------------------------------------
# exercises: a checker for each (it returns a message on success, raises AssertionError)


def reference_median_timer(
    fn: Callable[[], Any], repeats: int, timer: Callable[[], float] = time.perf_counter
) -> float:
    """The median seconds of `repeats` timed calls of fn, after one untimed warm-up call."""
    fn()  # warm-up: compilation, first touch, cold caches stay out of the samples
    times = []
    for _ in range(repeats):
        start = timer()
        fn()
        times.append(timer() - start)
    return statistics.median(times)


class _ScriptedClock:
    """A fake clock that moves only when the timed function runs: each call of `call` lasts
    the next duration of the script, so the right median is known exactly."""

    def __init__(self, durations: list[float]):
        self.durations, self.now, self.calls, self.reads = list(durations), 0.0, 0, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def call(self) -> None:
        if self.calls < len(self.durations):
            self.now += self.durations[self.calls]
        self.calls += 1


def check_median_timer(timer_fn: Callable[..., float]) -> str:
    """Check my_median_timer(fn, repeats, timer=time.perf_counter) against a scripted clock.

    It must call fn once untimed (the warm-up), then `repeats` times, each call timed on its
    own with `timer`, and return the median of those times in seconds.
    """
    cases = [  # warm-up first, then the timed calls; one slow outlier in each
        [1.0, 0.010, 0.012, 0.011, 0.500, 0.013],
        [2.0, 0.004, 0.001, 0.003, 0.050, 0.002, 0.0035],
    ]
    for durations in cases:
        repeats = len(durations) - 1
        timed = durations[1:]
        clock = _ScriptedClock(durations)
        got = timer_fn(clock.call, repeats, timer=clock)
        expected = statistics.median(timed)
        assert clock.calls == repeats + 1, (
            f"with repeats={repeats}, fn was called {clock.calls} times: expected one "
            f"warm-up call, then {repeats} timed calls"
        )
        assert clock.reads > 0, (
            "the timer you were given was never read: time with the `timer` argument "
            "(it defaults to time.perf_counter), not with time.perf_counter directly"
        )
        assert isinstance(got, (int, float)), (
            f"return the median as a number of seconds, got {type(got).__name__}"
        )
        if abs(got - expected) <= 1e-12:
            continue
        hints = [
            (
                statistics.fmean(timed),
                "the mean (as is timing the whole loop and dividing): one slow call "
                "drags it up",
            ),
            (statistics.median(durations), "the median with the warm-up call timed too"),
            (min(timed), "the fastest call (the minimum)"),
            (sum(timed), "the total time of the timed calls"),
            (sum(durations), "the total time, warm-up included"),
        ]
        what = next((h for value, h in hints if abs(got - value) <= 1e-12), None)
        raise AssertionError(
            f"calls of {timed} s (after a {durations[0]} s warm-up) should give the median "
            f"{expected} s; got {got}" + (f", which is {what}" if what else "")
        )
    return "my_median_timer is right: one warm-up, each call timed alone, the median returned"


def reference_matmul_gflops(m: int, n: int, k: int, seconds: float) -> float:
    """GFLOP/s of an (m x k) @ (k x n) product that took `seconds`."""
    return bench.gflops(bench.matmul_flops(m, n, k), seconds)


def _which(got: float, candidates: list[tuple[float, str]]) -> str:
    """': that is ' and the hints whose value `got` equals (to 1e-9), or '' if none does."""
    hits = [hint for value, hint in candidates if abs(got - value) <= 1e-9 * abs(value)]
    return f": that is {' or '.join(hits)}" if hits else ""


def check_matmul_gflops(gflops_fn: Callable[[int, int, int, float], float]) -> str:
    """Check my_gflops(m, n, k, seconds): the GFLOP/s of an (m x k) @ (k x n) product."""
    for m, n, k, seconds in [
        (128, 128, 128, 1e-3),
        (2000, 1000, 3000, 0.5),
        (3, 5, 7, 2e-9),
    ]:
        got = gflops_fn(m, n, k, seconds)
        assert isinstance(got, (int, float)), f"return a number, got {type(got).__name__}"
        expected = reference_matmul_gflops(m, n, k, seconds)
        if abs(got - expected) <= 1e-9 * expected:
            continue
        hint = _which(
            got,
            [
                (expected / 2, "one FLOP per term: a multiply-add is two"),
                (expected * 1e9, "FLOP/s, not GFLOP/s (divide by 1e9)"),
                (expected * 5e8, "FLOP/s, and one FLOP per term"),
                (2 * n**3 / seconds / 1e9, "n**3 terms: the shapes are not square"),
                (2 * m**3 / seconds / 1e9, "m**3 terms: the shapes are not square"),
            ],
        )
        raise AssertionError(
            f"({m} x {k}) @ ({k} x {n}) in {seconds} s is {expected:.6g} GFLOP/s "
            f"({m}*{n} dot products of length {k}, 2 FLOPs per term); got {got!r}{hint}"
        )
    return "my_gflops is right: 2*m*n*k FLOPs, divided by the seconds and by 1e9"


def reference_peak_gflops(
    cores: int, ghz: float, simd_bits: int, fma_units: int, dtype: str
) -> float:
    """cores x clock x flop per cycle, flop per cycle = 2 (an FMA) x lanes x FMA units."""
    lanes = simd_bits // {"float64": 64, "float32": 32}[bench.check_dtype(dtype)]
    return cores * ghz * 2 * lanes * fma_units


def check_peak_formula(peak_fn: Callable[[int, float, int, int, str], float]) -> str:
    """Check my_peak(cores, ghz, simd_bits, fma_units, dtype): a CPU's peak in GFLOP/s."""
    cases = [  # made-up chips: (cores, GHz, vector bits, FMA units per core, dtype)
        (8, 3.0, 512, 1, "float64"),
        (1, 2.0, 256, 3, "float32"),
        (4, 3.5, 128, 4, "float64"),
        (16, 2.5, 256, 2, "float32"),
    ]
    for cores, ghz, bits, units, dtype in cases:
        got = peak_fn(cores, ghz, bits, units, dtype)
        assert isinstance(got, (int, float)), f"return a number, got {type(got).__name__}"
        expected = reference_peak_gflops(cores, ghz, bits, units, dtype)
        if abs(got - expected) <= 1e-9 * expected:
            continue
        lanes = expected / (cores * ghz * 2 * units)
        hint = _which(
            got,
            [
                (expected / 2, "an FMA counted as one operation (a multiply and an add)"),
                (expected / units, "the FMA units left out"),
                (expected / cores, "one core's peak"),
                (expected * (bits // 64) / lanes, "64-bit lanes for every dtype"),
                (expected * bits / lanes, "bits where lanes belong"),
            ],
        )
        raise AssertionError(
            f"{cores} core(s) at {ghz} GHz, {bits}-bit vectors, {units} FMA unit(s) per core, "
            f"{dtype}: expected {expected:g} GFLOP/s, got {got!r}{hint}"
        )
    return "my_peak is right: cores x GHz x 2 (an FMA) x lanes x FMA units"
