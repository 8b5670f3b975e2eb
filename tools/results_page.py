"""Write book/results.md: every recorded benchmark result, per suite and machine.

    python tools/results_page.py          (re)write the page
    python tools/results_page.py --check  exit 1 if the page is out of date

The page is generated from benchmarks/results/*.json so that it can never disagree with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from microgpt_lib import bench
from microgpt_lib.kernels import KERNELS

ROOT = Path(__file__).resolve().parent.parent

PAGE = ROOT / "book" / "results.md"
HIDDEN = {"suite", "times_s", "repeats", "number"}

INTRO = """# Recorded results

Every figure below was measured by `python -m microgpt_lib.bench SUITE --record` on the machine
named, and is stored, with its full hardware record, in
`benchmarks/results/<machine>--<suite>.json`.
This page is generated from those files (`python tools/results_page.py`); nobody types a number
into it. Times are seconds (median of the repeats, with the fastest and slowest), rates GFLOP/s.

To add your machine: run the suites with `--record` and send the files.
"""


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def hardware_line(hw: dict) -> str:
    cpu = hw.get("cpu", {})
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in cpu.get("caches", {}).items())
    blas = hw.get("blas", {})
    parts = [
        f"{cpu.get('model')} ({cpu.get('logical_cores')} logical cores"
        f"{'; ' + caches if caches else ''})",
        hw.get("os", ""),
        f"Python {hw.get('python')}",
        f"numpy {blas.get('numpy')} with {blas.get('blas_name')}",
        f"numba {hw.get('numba')}",
        f"torch {hw.get('torch')}",
    ]
    if hw.get("gpu"):
        parts.append(f"GPU: {hw['gpu']}")
    return "; ".join(p for p in parts if p)


def table(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [
            c
            for c, v in row.items()
            if c not in columns and c not in HIDDEN and not isinstance(v, (list, dict))
        ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows
    ]
    return lines


def ladder(result: dict) -> list[str]:
    """One line per kernel of a matmul result: float64, the largest N it ran, all threads."""
    best: dict[str, dict] = {}
    for row in bench.with_percent_of_peak(result["rows"], result["rows"]):
        if row.get("dtype") != "float64" or "gflops" not in row or "n" not in row:
            continue
        key = row["kernel"]
        old = best.get(key)
        if old is None or (row["n"], row.get("threads") or 1) > (
            old["n"],
            old.get("threads") or 1,
        ):
            best[key] = row
    lines = [
        "| kernel | what it is | N | threads | GFLOP/s | % of peak | vs BLAS |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(best.values(), key=lambda r: r["gflops"]):
        known = KERNELS.get(row["kernel"])
        lines.append(
            f"| {row['kernel']} | {known.summary if known else row['family']} | {row['n']} "
            f"| {row.get('threads')} "
            f"| {cell(row['gflops'])} "
            f"| {cell(row.get('percent_of_peak', ''))} | {cell(row.get('ratio_to_blas', ''))} |"
        )
    return lines


def render() -> str:
    results = [bench.load_results(p) for p in sorted(bench.RESULTS_DIR.glob("*.json"))]
    lines = [INTRO]
    if not results:
        lines.append("No results are recorded yet.\n")
    ladders = [r for r in results if r["suite"] == "matmul"]
    if ladders:
        lines.append("## The ladder\n")
        lines.append(
            "The course's matrix-product kernels, slowest to fastest: each at the largest size it "
            "was run at, in float64, on all the threads it uses (`matmul` suite).\n"
        )
        for result in ladders:
            lines.append(f"### {result['machine']}\n")
            lines += ladder(result)
            lines.append("")
    for suite in sorted({r["suite"] for r in results}):
        lines.append(f"## Suite `{suite}`\n")
        for result in (r for r in results if r["suite"] == suite):
            hw = result["hardware"]
            lines.append(f"### {result['machine']}\n")
            lines.append(f"Recorded {hw.get('date', '?')} with `{result['command']}`.  ")
            lines.append(f"{hardware_line(hw)}.\n")
            lines += table(result["rows"])
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the page is up to date"
    )
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(
                f"{PAGE.relative_to(ROOT)} is out of date: run `python tools/results_page.py`"
            )
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
