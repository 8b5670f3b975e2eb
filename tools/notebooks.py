"""Run the course's notebooks in place, and check that their stored outputs are honest.

    python tools/notebooks.py execute [NOTEBOOK ...]   run top to bottom, save outputs + widgets
    python tools/notebooks.py check   [NOTEBOOK ...]   fail if a notebook's outputs are stale

``execute`` runs every cell in a fresh kernel and then asks that kernel which ``microgpt_lib``
modules it imported; it stores a SHA-256 of each module's source in the notebook's metadata
(``metadata.microgpt.modules``). ``check`` recomputes those hashes from the current sources: if
a module changed after the notebook ran, the book would show outputs the library no longer
produces, and the check says which module and which notebook to re-run. It also insists on one
clean top-to-bottom run (execution counts 1..n) and no stored error outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = "microgpt_lib"
METADATA_KEY = "microgpt"
GLUE_TEXT = (
    "application/papermill.record/text/plain"  # where myst-nb's glue keeps a value
)

# Printed by a last, unsaved cell: the library modules this kernel imported.
PROBE = (
    "import sys as _sys, json as _json\n"
    "print(_json.dumps(sorted(m for m in _sys.modules\n"
    f"    if m == {PACKAGE!r} or m.startswith({PACKAGE + '.'!r}))))"
)


def module_file(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"cannot find the source of module {name}")
    return Path(spec.origin)


def module_hash(name: str) -> str:
    return hashlib.sha256(module_file(name).read_bytes()).hexdigest()


def notebook_paths(args: list[str]) -> list[Path]:
    paths = (
        [Path(a).resolve() for a in args]
        if args
        else sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    return paths


def execute(path: Path, timeout: int = 1200) -> float:
    """Run one notebook top to bottom in a fresh kernel and save it in place; returns seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    with client.setup_kernel():
        info = client.wait_for_reply(client.kc.kernel_info())
        nb.metadata["language_info"] = info["content"]["language_info"]
        for index, cell in enumerate(nb.cells):
            client.execute_cell(
                cell, index, execution_count=client.code_cells_executed + 1
            )
        probe = nbformat.v4.new_code_cell(PROBE)
        nb.cells.append(
            probe
        )  # nbclient writes results back by index; removed again below
        try:
            client.execute_cell(probe, len(nb.cells) - 1, store_history=False)
        finally:
            nb.cells.pop()
        client.set_widgets_metadata()
    seconds = time.perf_counter() - start
    modules = json.loads(
        "".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout")
    )
    nb.metadata[METADATA_KEY] = {
        "modules": {m: module_hash(m) for m in modules},
        # how long the stored run took, kernel start to last cell: the chapter's stated
        # running time is checked against it (tests/test_notebooks.py)
        "seconds": round(seconds, 1),
        "cores": os.cpu_count(),
    }
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    return seconds


def problems(path: Path) -> list[str]:
    """Why a notebook's stored outputs cannot be trusted (empty list: they can)."""
    nb = json.loads(path.read_text())
    found = []
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    if counts != list(range(1, len(counts) + 1)):
        found.append("execution counts are not 1..n: not one clean top-to-bottom run")
    for index, cell in enumerate(nb["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(
                    f"cell {index} stores an error output ({output.get('ename')})"
                )
            glued = output.get("metadata", {}).get("scrapbook", {}).get("name")
            value = "".join(output.get("data", {}).get(GLUE_TEXT, ""))
            if glued and value.startswith(
                "np."
            ):  # numpy 2's scalar repr: {glue:text} fails
                found.append(
                    f"cell {index} glues {glued!r} as a numpy scalar ({value[:30]}): "
                    "glue float(...) instead"
                )
    modules = nb.get("metadata", {}).get(METADATA_KEY, {}).get("modules")
    if not modules:
        found.append(
            f"no record of the {PACKAGE} modules it ran against: run `make execute`"
        )
        return found
    for name, stored in sorted(modules.items()):
        try:
            current = module_hash(name)
        except FileNotFoundError:
            found.append(f"it imported {name}, which no longer exists")
            continue
        if current != stored:
            found.append(f"{name} changed since the notebook ran")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["execute", "check"])
    parser.add_argument(
        "notebooks", nargs="*", help="default: every notebooks/NN_*.ipynb"
    )
    options = parser.parse_args(argv)
    paths = notebook_paths(options.notebooks)
    if options.command == "execute":
        for path in paths:
            print(f"executing {path.relative_to(ROOT)} ...", flush=True)
            print(f"  done in {execute(path):.0f} s", flush=True)
        return 0
    failed = 0
    for path in paths:
        for problem in problems(path):
            print(f"{path.relative_to(ROOT)}: {problem}")
            failed += 1
    if failed:
        print(
            "re-run the notebooks named above with `make execute NB=...` "
            "(or `make execute` for all)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
