"""The imports point one way: bench and machine below every chapter, labs above their concepts."""

import json
import shutil

from microgpt_lib import bench
from tools import layering


def test_the_library_and_notebooks_obey_the_layers():
    assert layering.violations() == []


def test_imports_are_read_from_every_form():
    source = "\n".join(
        [
            "import microgpt_lib.kernels",
            "from microgpt_lib import bench, machine as m",
            "from microgpt_lib.device import pick_device",
            "from . import layout",
            "from .blas import thread_env",
            "def f():\n    from .kernels_lab import run_ladder",  # inside a function still counts
            # a script's entry point is not a dependency:
            "if __name__ == '__main__':\n    from microgpt_lib.suites import main",
        ]
    )
    assert layering.imported_modules(source) == {
        "kernels",
        "bench",
        "machine",
        "device",
        "layout",
        "blas",
        "kernels_lab",
    }


def test_a_wrong_import_is_caught(tmp_path):
    """Copy the library, add one import that points the wrong way at each level: each is named."""
    package, notebooks = tmp_path / "microgpt_lib", tmp_path / "notebooks"
    shutil.copytree(
        layering.ROOT / "microgpt_lib",
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    notebooks.mkdir()
    assert layering.violations(package, notebooks) == []
    for module, line in [
        ("bench", "from . import machine"),
        ("machine", "from . import kernels"),
        ("kernels", "from . import kernels_lab"),
        ("blas_lab", "from . import kernels_lab"),
        ("device", "from microgpt_lib import suites"),
    ]:
        path = package / f"{module}.py"
        path.write_text(path.read_text() + f"\n{line}\n")
    cell = {"cell_type": "code", "source": ["from microgpt_lib import bench, suites\n"]}
    (notebooks / "00_x.ipynb").write_text(json.dumps({"cells": [cell]}))
    assert layering.violations(package, notebooks) == [
        "microgpt_lib/bench.py imports machine",
        "microgpt_lib/blas_lab.py imports kernels_lab",
        "microgpt_lib/device.py imports suites",
        "microgpt_lib/kernels.py imports kernels_lab",
        "microgpt_lib/machine.py imports kernels",
        "notebooks/00_x.ipynb imports suites",
    ]


def test_bench_runs_the_suites_only_as_a_script():
    source = (layering.ROOT / "microgpt_lib" / "bench.py").read_text()
    assert (
        "suites" not in layering.imported_modules(source)
        and "microgpt_lib.suites" in source
    )
    assert bench.RESULTS_DIR.name == "results"
