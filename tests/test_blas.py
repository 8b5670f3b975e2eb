"""microgpt_lib.blas: which BLAS numpy calls, and setting its threads from the environment."""

import numpy as np
import pytest

from microgpt_lib import blas, machine

CONTROLLED = bool(machine.blas_pools())
needs_threadpoolctl = pytest.mark.skipif(
    not CONTROLLED, reason="threadpoolctl cannot see this BLAS (Accelerate)"
)


@pytest.mark.parametrize(
    "name, family",
    [
        ("scipy-openblas", "openblas"),
        ("openblas64", "openblas"),
        ("OpenBLAS", "openblas"),
        ("accelerate", "accelerate"),
        ("vecLib", "accelerate"),
        ("mkl-sdl", "mkl"),
        ("mkl-dynamic-lp64-iomp", "mkl"),
        ("blis", "blis"),
        ("cblas", "cblas"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_parse_blas_name(name, family):
    assert blas.parse_blas_name(name) == family


def test_blas_library_on_this_machine():
    built_with = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    assert blas.blas_library() == blas.parse_blas_name(built_with)
    assert blas.blas_library() in ("openblas", "accelerate", "mkl", "blis")


def test_blas_library_falls_back_to_the_running_pool():
    info = {
        "blas_name": "unknown (AttributeError)",
        "threadpools": [{"user_api": "blas", "internal_api": "mkl", "num_threads": 4}],
    }
    assert blas.blas_library(info) == "mkl"
    assert blas.blas_library({"blas_name": None, "threadpools": []}) == "unknown"


def test_describe_blas():
    info = blas.describe_blas()
    assert info["library"] == blas.blas_library()
    assert info["numpy"] == np.__version__
    assert info["thread_env_var"] == blas.THREAD_ENV_VARS.get(info["library"])
    assert info["threadpoolctl_controls_it"] == CONTROLLED
    if CONTROLLED:
        assert info["threads"] >= 1


def test_thread_env():
    env = blas.thread_env(3)
    assert (
        env["OPENBLAS_NUM_THREADS"]
        == env["VECLIB_MAXIMUM_THREADS"]
        == env["MKL_NUM_THREADS"]
        == "3"
    )
    assert env["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="positive integer"):
        blas.thread_env(0)


def test_run_python_passes_the_environment():
    out = blas.run_python(
        "import os; print(os.environ['VECLIB_MAXIMUM_THREADS'])", env=blas.thread_env(1)
    )
    assert out.strip() == "1"
    with pytest.raises(RuntimeError, match="child Python failed"):
        blas.run_python("raise SystemExit(3)")


@needs_threadpoolctl
def test_environment_fixes_threads_in_a_fresh_interpreter():
    code = "import numpy; from microgpt_lib import machine; print(machine.blas_threads())"
    assert blas.run_python(code, env=blas.thread_env(1)).strip() == "1"
