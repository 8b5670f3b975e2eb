"""Stored notebook outputs must come from one clean run against the current library code."""

import json
import re
from pathlib import Path

import pytest

from tools import notebooks as notebook_tools
from tools import prose_numbers, results_page

ROOT = Path(__file__).resolve().parent.parent

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
TOC = (ROOT / "_toc.yml").read_text()


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_fresh_and_clean(path):
    problems = notebook_tools.problems(path)
    assert not problems, (
        f"{path.name}: "
        + "; ".join(problems)
        + " -> run `make execute NB=notebooks/"
        + path.name
        + "`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_is_in_the_book_and_titled(path):
    assert f"- file: notebooks/{path.stem}\n" in TOC, (
        f"{path.name} is missing from _toc.yml"
    )
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith(
        f"# {path.name[:2]} — "
    ), f"{path.name} should open with a '# {path.name[:2]} — Title' markdown cell"


def test_a_changed_module_makes_a_notebook_stale(tmp_path, monkeypatch):
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": 1, "outputs": [], "source": ""}
        ],
        "metadata": {"microgpt": {"modules": {"microgpt_lib.bench": "0" * 64}}},
    }
    path = tmp_path / "00_x.ipynb"
    path.write_text(json.dumps(nb))
    assert notebook_tools.problems(path) == [
        "microgpt_lib.bench changed since the notebook ran"
    ]
    nb["metadata"]["microgpt"]["modules"]["microgpt_lib.bench"] = (
        notebook_tools.module_hash("microgpt_lib.bench")
    )
    nb["cells"][0]["execution_count"] = 2
    nb["cells"][0]["outputs"] = [{"output_type": "error", "ename": "ZeroDivisionError"}]
    path.write_text(json.dumps(nb))
    assert notebook_tools.problems(path) == [
        "execution counts are not 1..n: not one clean top-to-bottom run",
        "cell 0 stores an error output (ZeroDivisionError)",
    ]


def test_results_page_matches_the_recorded_results():
    assert results_page.main(["--check"]) == 0, (
        "book/results.md is stale: run `python tools/results_page.py`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_never_import_the_suites(path):
    """suites.py is where a new chapter registers its suite: were it hashed into a notebook's
    record, every landing would stale that notebook."""
    modules = (
        json.loads(path.read_text())
        .get("metadata", {})
        .get("microgpt", {})
        .get("modules", {})
    )
    assert modules and "microgpt_lib.suites" not in modules, path.name


def test_editing_the_suite_table_stales_no_notebook(tmp_path, monkeypatch):
    real = notebook_tools.module_hash

    def edited(name):  # as if a line had been added to suites.py
        return "0" * 64 if name == "microgpt_lib.suites" else real(name)

    monkeypatch.setattr(notebook_tools, "module_hash", edited)
    assert notebook_tools.module_hash("microgpt_lib.suites") == "0" * 64
    for path in NOTEBOOKS:
        assert not [p for p in notebook_tools.problems(path) if "suites" in p], path.name


def test_the_prose_types_no_measured_number():
    """Measured figures are glued from the cell that measured them, or printed by it."""
    found = [line for path in NOTEBOOKS for line in prose_numbers.findings(path)]
    assert not found, "\n".join(["typed into the prose (glue them instead):", *found])


def test_the_prose_check_catches_a_typed_figure(tmp_path):
    def markdown(text):
        return {"cell_type": "markdown", "source": [text], "metadata": {}}

    cells = [
        markdown("The step takes 12.5 ms, 16.9x faster, at 80 GFLOP/s."),  # three typed
        markdown("It is about ten times faster than before."),  # a spelled ratio
        markdown(
            "The step takes {glue:text}`step_ms:.1f` ms, `4x4` tiles, a 16 × 16 matrix."
        ),
        markdown(
            "An H100 does 67 TFLOP/s in float32 {cite}`nvidia2022h100`."
        ),  # published
        markdown("```python\nx = 3  # 5 ms\n```\nand $2 \\times 10^9$ FLOP."),
        markdown("BLAS reached 88% of the peak."),
    ]
    path = tmp_path / "99_made_up.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}}))
    found = prose_numbers.findings(path)
    assert [line.split(": ")[2].split(" in ")[0] for line in found] == [
        "'12.5 ms'",
        "'16.9x'",
        "'80 GFLOP/s'",
        "'ten times faster'",
        "'88% of the peak'",
    ]
    assert all(line.startswith("99_made_up.ipynb: cell ") for line in found)


def test_a_numpy_scalar_glued_is_caught(tmp_path):
    output = {
        "output_type": "display_data",
        "metadata": {"scrapbook": {"name": "x"}},
        "data": {notebook_tools.GLUE_TEXT: "np.float64(1.5)"},
    }
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": 1, "outputs": [output], "source": ""}
        ],
        "metadata": {"microgpt": {"modules": {}}},
    }
    path = tmp_path / "00_x.ipynb"
    path.write_text(json.dumps(nb))
    assert any("glues 'x' as a numpy scalar" in p for p in notebook_tools.problems(path))


MINUTES = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chapter_opens_with_what_it_builds_measures_and_needs(path):
    """The first cell says what the reader builds, measures, and how long it runs on what; the
    stated time bounds the stored run's (recorded by `make execute`)."""
    nb = json.loads(path.read_text())
    opening = "".join(nb["cells"][0]["source"])
    for label in (
        "**What you build:**",
        "**What you measure:**",
        "**Time and hardware:**",
    ):
        assert label in opening, f"{path.name}: the first cell needs a {label} line"
    stated = re.search(r"\*\*Time and hardware:\*\* under (\w+) minutes?", opening)
    assert stated and stated.group(1) in MINUTES, (
        f"{path.name}: say the running time as 'under N minutes'"
    )
    recorded = nb["metadata"].get("microgpt", {}).get("seconds")
    assert recorded is not None, (
        f"{path.name}: no recorded running time: run make execute"
    )
    assert recorded < 60 * MINUTES[stated.group(1)], (
        f"{path.name} says under {stated.group(1)} minute(s); its stored run took "
        f"{recorded:.0f} s"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chapter_ends_with_its_summary_and_exercises(path):
    headings = [
        line
        for cell in json.loads(path.read_text())["cells"]
        if cell["cell_type"] == "markdown"
        for line in "".join(cell["source"]).splitlines()
        if line.startswith("## ")
    ]
    assert headings[-2:] == ["## Summary", "## Exercises"], (
        f"{path.name} ends with {headings[-2:]}"
    )


def test_the_gallery_is_generated_from_the_recorded_results():
    from tools import gallery

    assert (ROOT / "book" / "gallery.md").read_text() == gallery.render(draw=False), (
        "book/gallery.md is out of date: run `make results`"
    )
