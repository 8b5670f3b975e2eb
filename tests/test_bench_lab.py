"""Chapter 00's experiments: the naive matmul, the first two suites, the clock, the peak's
anatomy and the exercises' checkers."""

import statistics
import time

import numpy as np
import pytest

from microgpt_lib import bench_lab


def test_naive_matmul_matches_numpy_and_checks_shapes():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(
        bench_lab.naive_matmul(a.tolist(), b.tolist()), a @ b, rtol=1e-12
    )
    with pytest.raises(ValueError, match="shapes do not match"):
        bench_lab.naive_matmul(a.tolist(), a.tolist())


def test_suite_matmul_intro_rows(suite_options):
    rows = bench_lab.suite_matmul_intro(suite_options(sizes=[4, 8], repeats=2))
    assert {(r["kernel"], r["n"]) for r in rows} == {
        (k, n) for k in ("python-ijk", "numpy") for n in (4, 8)
    }
    assert all(r["gflops"] > 0 for r in rows)


def test_suite_peak_rows(suite_options):
    rows = bench_lab.suite_peak(suite_options(dtypes=["float64"], threads=1))
    assert [r["kernel"] for r in rows[:2]] == ["fma-loop", "fma-loop"]
    assert all(r["threads"] == 1 and r["gflops"] > 0 for r in rows)
    # a third row where numba compiles narrower vectors than the CPU has (AVX-512 Intel):
    # what its default width reaches
    assert [r["kernel"] for r in rows[2:]] in ([], ["fma-loop-256-bit"])


# --------------------------------------------------------------------------------------------
# the clock and the anatomy of the peak


def test_clock_resolution_is_asked_and_measured():
    clock = bench_lab.clock_resolution(reads=2000)
    assert clock["reported_s"] > 0 and clock["implementation"]
    assert 0 < clock["read_s"] < 1e-3 and clock["smallest_step_s"] > 0


def test_simd_width_comes_from_the_widest_flag():
    assert bench_lab.simd_width_bits({"simd": ["sse4_2", "avx", "avx2"]}) == (256, "avx2")
    assert bench_lab.simd_width_bits({"simd": ["avx2", "avx512f"]}) == (512, "avx512f")
    assert bench_lab.simd_width_bits({"machine": "arm64"})[0] == 128
    assert bench_lab.simd_width_bits({"machine": "riscv64"}) == (None, "unknown")


def test_reported_clock_is_positive_or_absent():
    ghz, source = bench_lab.reported_clock_ghz()
    assert (ghz is None and source == "not reported") or (0.1 < ghz < 10 and source)


# --------------------------------------------------------------------------------------------
# the exercises' checkers: the reference passes, plausible mistakes fail


def test_median_timer_checker_passes_the_reference():
    assert "right" in bench_lab.check_median_timer(bench_lab.reference_median_timer)


def _timed(fn, repeats, timer):
    times = []
    for _ in range(repeats):
        start = timer()
        fn()
        times.append(timer() - start)
    return times


@pytest.mark.parametrize(
    "wrong, message",
    [
        (  # the mean, not the median
            lambda fn, repeats, timer=time.perf_counter: (
                fn(),
                statistics.fmean(_timed(fn, repeats, timer)),
            )[1],
            "the mean",
        ),
        (  # no warm-up: the first call is timed too
            lambda fn, repeats, timer=time.perf_counter: statistics.median(
                _timed(fn, repeats + 1, timer)
            ),
            "warm-up call timed too",
        ),
        (  # the fastest call
            lambda fn, repeats, timer=time.perf_counter: (
                fn(),
                min(_timed(fn, repeats, timer)),
            )[1],
            "the minimum",
        ),
        (  # no warm-up call at all
            lambda fn, repeats, timer=time.perf_counter: statistics.median(
                _timed(fn, repeats, timer)
            ),
            "fn was called 5 times",
        ),
        (  # ignores the timer it is given
            lambda fn, repeats, timer=time.perf_counter: bench_lab.reference_median_timer(
                fn, repeats
            ),
            "never read",
        ),
    ],
)
def test_median_timer_checker_names_the_mistake(wrong, message):
    with pytest.raises(AssertionError, match=message):
        bench_lab.check_median_timer(wrong)


def test_gflops_checker():
    assert "right" in bench_lab.check_matmul_gflops(bench_lab.reference_matmul_gflops)
    with pytest.raises(AssertionError, match="a multiply-add is two"):
        bench_lab.check_matmul_gflops(lambda m, n, k, s: m * n * k / s / 1e9)
    with pytest.raises(AssertionError, match="not GFLOP/s"):
        bench_lab.check_matmul_gflops(lambda m, n, k, s: 2 * m * n * k / s)
    with pytest.raises(AssertionError, match="not square"):
        bench_lab.check_matmul_gflops(lambda m, n, k, s: 2 * n**3 / s / 1e9)


def test_peak_formula_checker():
    assert "right" in bench_lab.check_peak_formula(bench_lab.reference_peak_gflops)
    with pytest.raises(AssertionError, match="counted as one operation"):
        bench_lab.check_peak_formula(lambda c, g, b, u, d: c * g * (b // 64) * u)
    with pytest.raises(AssertionError, match="64-bit lanes"):
        bench_lab.check_peak_formula(lambda c, g, b, u, d: c * g * 2 * (b // 64) * u)
    with pytest.raises(AssertionError, match="FMA units left out"):
        bench_lab.check_peak_formula(
            lambda c, g, b, u, d: c * g * 2 * b // (64 if d == "float64" else 32)
        )
