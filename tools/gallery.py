"""Write book/gallery.md and its plots: each rung of the course's ladders, every recorded machine
side by side (python tools/gallery.py; `make results` runs it after the results page).

The plots are drawn from benchmarks/results/*.json only, so a reader who records their own
machine (``python -m microgpt_lib.bench SUITE --record``) and runs ``make results`` sees it
appear beside the course's machines.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from microgpt_lib import bench  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "gallery.md"
IMAGES = ROOT / "book" / "gallery"

# the matrix-product ladder, bottom to top: (kernel, threads, what it is)
MATMUL_LADDER = [
    ("python-ijk", 1, "Python loops (ch. 00)"),
    ("numba-ijk", 1, "compiled, ijk order (ch. 04)"),
    ("numba-ikj", 1, "compiled, ikj order (ch. 04)"),
    ("numba-tiled", 1, "cache blocking (ch. 05)"),
    ("numba-packed", 1, "packed, register tile (ch. 05)"),
    ("numba-outer", 1, "outer-product micro-kernel (ch. 05)"),
    ("numba-packed-parallel", None, "packed, every core (ch. 05)"),
    ("numpy", None, "BLAS, every core (ch. 06)"),
    ("fma-loop", None, "the measured peak (ch. 00)"),
]
# one training step of microgpt's recipe (one name, 16 channels), bottom to top
STEP_LADDER = [
    ("scalar-gpt", "plain", "scalar Values (ch. 02)"),
    ("scalar-gpt", "fast", "fused scalar nodes, GC paused (ch. 02)"),
    ("gpt", "tensor", "numpy Tensors (ch. 09)"),
    ("gpt", "fused", "hand-fused numpy (ch. 09)"),
    ("gpt", "compiled", "compiled whole, numba (ch. 09)"),
    ("train", "torch", "torch on the CPU (ch. 10)"),
]
SIZE = 512  # the matrix size the ladder compares at (Python at its largest size instead)


def results() -> dict[str, dict[str, dict[str, Any]]]:
    """{suite: {machine: result}} for every recorded file."""
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(bench.RESULTS_DIR.glob("*.json")):
        result = bench.load_results(path)
        found[result["suite"]][result["machine"]] = result
    return found


def matmul_rung(rows: list[dict], kernel: str, threads: int | None) -> float | None:
    """GFLOP/s of one kernel at SIZE (or its largest size below), float64."""
    mine = [
        r
        for r in rows
        if r.get("kernel") == kernel
        and r.get("dtype") in ("float64", None)
        and r.get("n")
        and r.get("gflops")
    ]
    if threads is None and mine:
        threads = max(r.get("threads") or 1 for r in mine)
    mine = [r for r in mine if (r.get("threads") or 1) == threads and r["n"] <= SIZE]
    if kernel == "fma-loop":  # the best float64 sample on every core (the peak suite's)
        peaks = [
            r for r in rows if r.get("kernel") == kernel and r.get("dtype") == "float64"
        ]
        widest = max((r.get("threads") or 1 for r in peaks), default=None)
        return max(
            (r["gflops"] for r in peaks if (r.get("threads") or 1) == widest),
            default=None,
        )
    if not mine:
        return None
    return max(mine, key=lambda r: r["n"])["gflops"]


def step_rung(found: dict, machine: str, suite: str, impl: str) -> float | None:
    """ms per step of microgpt's recipe on one rung, from the suite that measures it."""
    result = found.get(suite, {}).get(machine)
    if result is None:
        return None
    for r in result["rows"]:
        if suite == "train":
            if r.get("kind") == "step" and r.get("preset") == "microgpt":
                if r.get("backend") == "torch" and r.get("dtype") == "float64":
                    return r["ms_per_step"]
        elif r.get("kind") == "step" and r.get("impl") == impl:
            ms = r.get("ms_per_step")
            return ms if ms is not None else 1e3 * r["median_s"]
    return None


def ladder_plot(
    values: dict[str, list[float | None]],
    labels: list[str],
    xlabel: str,
    path: Path,
    draw: bool = True,
) -> bool:
    """Horizontal bars, one group per rung, one colour per machine; False if nothing to plot
    (draw=False: only say whether there is something)."""
    machines = [m for m, v in values.items() if any(x is not None for x in v)]
    if not machines or not draw:
        return bool(machines)
    height = 0.8 / len(machines)
    fig, ax = plt.subplots(
        figsize=(7.5, 0.45 * len(labels) * max(1, len(machines) / 1.6))
    )
    for k, machine in enumerate(machines):
        ys = [i + k * height for i in range(len(labels))]
        xs = [x if x is not None else 0 for x in values[machine]]
        ax.barh(ys, xs, height=height, label=machine)
        for y, x in zip(ys, values[machine]):
            if x is not None:
                ax.text(x, y, f" {x:,.3g}", va="center", fontsize=7)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set(xscale="log", xlabel=xlabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return True


def render(draw: bool = True) -> str:
    """The page's text; the plots are (re)drawn as a side effect unless draw=False."""
    found = results()
    lines = [
        "# Results gallery\n",
        "The course's ladders, rung by rung, with every machine that recorded them side by "
        "side. Generated by `make results` from `benchmarks/results/` (the numbers are in "
        "{doc}`results`); record your own machine and run `make results` to see it here.\n",
    ]
    matmul = {}
    for machine in sorted(
        set(found.get("matmul", {})) | set(found.get("matmul-intro", {}))
    ):
        rows = [
            row
            for suite in ("matmul", "matmul-intro", "peak")
            for row in found.get(suite, {}).get(machine, {}).get("rows", [])
        ]
        matmul[machine] = [matmul_rung(rows, k, t) for k, t, _ in MATMUL_LADDER]
    path = IMAGES / "matmul-ladder.png"
    if ladder_plot(
        matmul,
        [what for _, _, what in MATMUL_LADDER],
        f"GFLOP/s, float64, N = {SIZE} (Python: its largest N; log scale)",
        path,
        draw,
    ):
        lines += [
            "## The matrix-product ladder (chapters 00, 04-06)\n",
            "```{figure} gallery/matmul-ladder.png",
            ":alt: GFLOP/s of each rung of the matrix-product ladder, one bar per machine",
            "",
            f"A {SIZE} x {SIZE} float64 matrix product on each rung, from Python loops to the "
            "vendor's BLAS and the machine's measured peak. A missing bar: that machine did "
            "not record that rung.",
            "```\n",
        ]
    machines = sorted(
        {m for suite in ("scalar-gpt", "gpt", "train") for m in found.get(suite, {})}
    )
    steps = {m: [step_rung(found, m, s, i) for s, i, _ in STEP_LADDER] for m in machines}
    path = IMAGES / "step-ladder.png"
    if ladder_plot(
        steps,
        [what for _, _, what in STEP_LADDER],
        "ms per training step, microgpt's recipe (one name, float64; log scale)",
        path,
        draw,
    ):
        lines += [
            "## The training-step ladder (chapters 02, 09, 10)\n",
            "```{figure} gallery/step-ladder.png",
            ":alt: milliseconds per training step of microgpt on each implementation",
            "",
            "One training step of microgpt (one name per step, 16 channels) in each "
            "implementation the course builds. Shorter is faster.",
            "```\n",
        ]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(ROOT)} and {IMAGES.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
