"""Chapter 00's experiments: the naive matmul and the first two suites."""

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
    assert [r["threads"] for r in rows] == [1, 1] and all(
        r["kernel"] == "fma-loop" for r in rows
    )
