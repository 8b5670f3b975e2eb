"""Write book/results.md: a readable summary of every recorded benchmark result.

    python tools/results_page.py          (re)write the page
    python tools/results_page.py --check  exit 1 if the page is out of date

The page is generated from benchmarks/results/*.json, so it can never disagree with them. It
shows summaries (a few columns, human units); every row stays in the JSON files it links to.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from microgpt_lib import bench
from microgpt_lib.kernels import KERNELS

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "results.md"

INTRO = """# Recorded results

Every figure below was measured by `python -m microgpt_lib.bench SUITE --record` on the machine
it names, and is stored with its full hardware record and the exact command in
`benchmarks/results/<machine>--<suite>.json`. This page is generated from those files
(`make results`); nobody types a number into it. It shows summaries; each section links to the
file with every row. Rates are medians of the repeats; peaks are the best sample (see
{doc}`methodology`).

To add your machine: run the suites with `--record`, then `make results`.
"""

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------
# human units


def seconds(s: float | None) -> str:
    """1.2e-7 -> '120 ns', 0.0153 -> '15.3 ms'."""
    if s is None:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            value = s / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
    return ""


def rate(gflops: float | None) -> str:
    if gflops is None:
        return ""
    return f"{gflops:,.0f}" if gflops >= 100 else f"{gflops:.3g}"


def times(ratio: float | None, what: str = "") -> str:
    """A ratio as a reader says it: 0.00047 -> '2,100x slower', 3.2 -> '3.2x faster'."""
    if ratio is None or ratio != ratio:  # None or nan
        return ""
    if ratio == 1.0:
        return "(the reference)"
    word, value = ("faster", ratio) if ratio >= 1 else ("slower", 1 / ratio)
    shown = f"{value:,.0f}" if value >= 10 else f"{value:.2g}"
    return f"{shown}x {word}{' than ' + what if what else ''}"


def percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}%" if value >= 1 else f"{value:.2g}%"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return lines + [""]


# --------------------------------------------------------------------------------------------
# one summary per suite


def peak_summary(rows: list[Row]) -> list[str]:
    peaks = [r for r in rows if r.get("kernel") == "fma-loop"]
    return table(
        ["dtype", "threads", "GFLOP/s"],
        [[r["dtype"], str(r["threads"]), rate(r["gflops"])] for r in peaks],
    )


def matmul_intro_summary(rows: list[Row]) -> list[str]:
    by = {(r["kernel"], r["n"]): r for r in rows}
    out = []
    for n in sorted({r["n"] for r in rows}):
        python, numpy = by.get(("python-ijk", n)), by.get(("numpy", n))
        out.append(
            [
                str(n),
                seconds(python and python["median_s"]),
                seconds(numpy and numpy["median_s"]),
                times(python["median_s"] / numpy["median_s"]) if python and numpy else "",
            ]
        )
    return table(["N", "Python loops", "numpy", "numpy is"], out)


def peaks_with_warnings(rows: list[Row]) -> list[Row]:
    """The peak rows measured while other programs used the cores (they say so)."""
    return [r for r in rows if r.get("family") == "peak" and r.get("warning")]


def matmul_summary(rows: list[Row]) -> list[str]:
    """The ladder at each of a few sizes: every kernel at its own thread count, float64."""
    memory = [r for r in rows if r.get("family") == "memory"]
    memory_and_peaks = [r for r in rows if r.get("family") in ("memory", "peak")]
    rows = bench.with_percent_of_peak(
        [r for r in rows if r.get("dtype") == "float64" and "n" in r], rows
    )
    most = max((r["threads"] for r in rows), default=1)
    threaded = {name for name, k in KERNELS.items() if k.parallel}
    rows = [r for r in rows if r["threads"] == (most if r["kernel"] in threaded else 1)]
    sizes = sorted({r["n"] for r in rows})
    shown = sorted({sizes[0], *(n for n in (128, 1024) if n in sizes), sizes[-1]})
    out = []
    for n in shown:
        at_n = sorted((r for r in rows if r["n"] == n), key=lambda r: r["gflops"])
        blas = next((r for r in at_n if r["kernel"] == "numpy"), None)
        out.append(f"**N = {n}**\n")
        out += table(
            ["kernel", "what it is", "threads", "GFLOP/s", "% of peak", "vs numpy"],
            [
                [
                    r["kernel"],
                    KERNELS[r["kernel"]].summary if r["kernel"] in KERNELS else "",
                    str(r["threads"]),
                    rate(r["gflops"]),
                    percent(r.get("percent_of_peak")),
                    ""
                    if blas is None or r is blas
                    else times(r["gflops"] / blas["gflops"]),
                ]
                for r in at_n
            ],
        )
    for r in peaks_with_warnings(memory_and_peaks):
        out.append(
            f"Note: {r['warning']} (the {r['dtype']} peak on {r['threads']} threads); "
            "percentages of that peak come out too high.\n"
        )
    for r in memory:
        out.append(
            f"Memory read bandwidth: {r['gbytes_per_s']:.1f} GB/s on {r['threads']} "
            "threads.\n"
        )
    return out


def autograd_summary(rows: list[Row]) -> list[str]:
    return table(
        ["variant", "collector", "ns per node (step)", "bytes per node"],
        [
            [
                r["kernel"],
                r["gc"],
                f"{r['step_ns_per_node']:,.0f}",
                f"{r['bytes_per_node']:.0f}" if "bytes_per_node" in r else "",
            ]
            for r in rows
        ],
    )


def scalar_gpt_summary(rows: list[Row]) -> list[str]:
    steps = [r for r in rows if r.get("kind") == "step"]
    out = table(
        ["step", "collector", "ms per step", "vs the first row", "GC ms per step"],
        [
            [
                r["impl"],
                r["gc"],
                f"{r['ms_per_step']:.1f}",
                times(r["speedup"]),
                f"{r['gc_ms_per_step']:.1f}",
            ]
            for r in steps
        ],
    )
    for r in rows:
        if r.get("kind") == "curve":
            losses = r["losses"]
            tail = losses[-100:]
            out.append(
                f"A {r['steps']}-step run (fast step): {r['ms_per_step']:.1f} ms per step, "
                f"loss {losses[0]:.3f} at the first step and {sum(tail) / len(tail):.3f} "
                f"on average over the last {len(tail)}; samples: "
                f"{', '.join(r['samples'][:8])}.\n"
            )
    return out


def layout_summary(rows: list[Row]) -> list[str]:
    matvec = [r for r in rows if r.get("kind") == "matvec"]
    out = []
    if matvec:
        kernels = list(dict.fromkeys(r["kernel"] for r in matvec))
        complete = [
            n
            for n in sorted({r["n"] for r in matvec})
            if len({r["kernel"] for r in matvec if r["n"] == n}) == len(kernels)
        ]
        n = complete[-1] if complete else max(r["n"] for r in matvec)
        out.append(f"y = A x at n = {n}:\n")
        out += table(
            ["kernel", "storage", "ns per element", "GFLOP/s"],
            [
                [
                    r["kernel"],
                    r["storage"],
                    f"{r['ns_per_element']:.3g}",
                    rate(r["gflops"]),
                ]
                for r in matvec
                if r["n"] == n
            ],
        )
    per_element = {
        (r["kernel"], r["n"]): r["ns_per_element"]
        for r in rows
        if r.get("kind") == "traversal"
    }
    ratios = [
        [str(n), f"{per_element['scale-by-columns', n] / per_element[kernel, n]:.1f}x"]
        for kernel, n in sorted(per_element)
        if kernel == "scale-by-rows" and ("scale-by-columns", n) in per_element
    ]
    if ratios:
        out.append("Column order over row order, time per element:\n")
        out += table(["n", "columns / rows"], ratios)
    return out


def blas_summary(rows: list[Row]) -> list[str]:
    sweep = [r for r in rows if r.get("kind") == "sweep"]
    if not sweep:
        return []
    library = sweep[0].get("library", "")
    notes = [
        f"Note: {r['warning']} (the {r['dtype']} peak on {r['threads']} threads); "
        "percentages of that peak come out too high.\n"
        for r in peaks_with_warnings(rows)
    ]
    return [f"BLAS library: {library}.\n", *notes] + table(
        ["dtype", "threads", "N", "GFLOP/s", "% of peak"],
        [
            [
                r["dtype"],
                str(r["threads"]),
                str(r["n"]),
                rate(r["gflops"]),
                percent(r.get("percent_of_peak")),
            ]
            for r in sweep
            if r["n"] >= 256
        ],
    )


def gpu_summary(rows: list[Row]) -> list[str]:
    precision = [r for r in rows if r.get("kind") == "precision"]
    return table(
        ["device", "mode", "N", "GFLOP/s", "relative error"],
        [
            [
                r.get("device_name", r["device"]),
                r["mode"],
                str(r["n"]),
                rate(r["gflops"]),
                f"{r['relative_error']:.1e}"
                if r.get("relative_error") is not None
                else "",
            ]
            for r in precision
        ],
    )


def optim_summary(rows: list[Row]) -> list[str]:
    ladder = [r for r in rows if r.get("kind") == "ladder"]
    return table(
        [
            "parameters",
            "implementation",
            "time per step",
            "bytes allocated",
            "vs torch fused",
        ],
        [
            [
                f"{r['params']:,}",
                r["impl"],
                seconds(r["median_s"]),
                "n/a"
                if r["bytes_allocated_per_step"] is None
                else f"{r['bytes_allocated_per_step']:,}",
                times(r["speedup_over_torch_fused"]),
            ]
            for r in ladder
        ],
    )


def gpt_summary(rows: list[Row]) -> list[str]:
    steps = [r for r in rows if r.get("kind") == "step"]
    out = table(
        ["step", "what it is", "time per step", "vs the fast scalar step"],
        [
            [
                r["impl"],
                r.get("what", ""),
                seconds(r["median_s"]),
                times(r.get("speedup_vs_scalar_fast")),
            ]
            for r in steps
        ],
    )
    batches = [r for r in rows if r.get("kind") == "batch" and r.get("tokens_per_s")]
    for dtype in sorted({r["dtype"] for r in batches}):
        best = max(
            (r for r in batches if r["dtype"] == dtype), key=lambda r: r["tokens_per_s"]
        )
        out.append(
            f"Training throughput, {dtype}: at most {best['tokens_per_s']:,.0f} tokens "
            f"per second, at batch {best['batch']}.\n"
        )
    return out


def train_summary(rows: list[Row]) -> list[str]:
    steps = [r for r in rows if r.get("kind") == "step"]
    out = table(
        ["preset", "backend", "device", "dtype", "time per step", "tokens/s"],
        [
            [
                r["preset"],
                r["backend"],
                r["device"],
                r["dtype"],
                seconds(r["median_s"]),
                f"{r['tokens_per_s']:,.0f}",
            ]
            for r in steps
        ],
    )
    for r in rows:
        if r.get("kind") == "names-run":
            reached = (
                f"; validation loss 2.0 reached after {r['val_2_0_at_s']:.0f} s"
                if r.get("val_2_0_at_s") is not None
                else ""
            )
            out.append(
                f"The names preset, {r['max_iters']:,} steps: {r['seconds']:.0f} s of "
                f"training, best validation loss {r['best_val']:.3f}{reached}.\n"
            )
    kv = [r for r in rows if r.get("kind") == "kv-cache" and r["prompt"] == 1]
    if kv:
        widest = max(kv, key=lambda r: r["batch"])
        out.append(
            f"KV cache, block size {widest['block_size']}, {widest['batch']} sequences from "
            f"BOS: {times(widest['speedup'])} than recomputing the prefix.\n"
        )
    makemore = {r["impl"]: r for r in rows if r.get("kind") == "makemore"}
    for r in makemore.values():
        if "speedup_vs_makemore" in r:
            out.append(
                f"Against makemore's transformer on the same shape: "
                f"{times(r['speedup_vs_makemore'])} per step.\n"
            )
    return out


SUMMARIES: dict[str, tuple[str, Callable[[list[Row]], list[str]]]] = {
    "peak": ("The machine's peak (chapter 00)", peak_summary),
    "matmul-intro": ("Python loops vs numpy (chapter 00)", matmul_intro_summary),
    "autograd": ("Value autograd (chapter 01)", autograd_summary),
    "scalar-gpt": ("A GPT made of scalars (chapter 02)", scalar_gpt_summary),
    "layout": ("Memory layout (chapter 03)", layout_summary),
    "matmul": ("The matmul ladder (chapters 04-05)", matmul_summary),
    "blas": ("BLAS (chapter 06)", blas_summary),
    "gpu": ("The GPU (chapter 07)", gpu_summary),
    "optim": ("Optimizers (chapter 08)", optim_summary),
    "gpt": ("A GPT made of matrices (chapter 09)", gpt_summary),
    "train": ("Training for real (chapter 10)", train_summary),
}


# --------------------------------------------------------------------------------------------
# the page


def machines_table(results: list[dict]) -> list[str]:
    by_machine: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_machine[r["machine"]].append(r)
    out = []
    for machine, rs in sorted(by_machine.items()):
        hw = max(rs, key=lambda r: r["hardware"].get("date", ""))["hardware"]
        cpu = hw.get("cpu", {})
        caches = ", ".join(
            f"{k} {v // 1024:,} KiB" for k, v in cpu.get("caches", {}).items()
        )
        out.append(
            [
                machine,
                str(cpu.get("model", "")),
                str(cpu.get("logical_cores", "")),
                caches,
                str(hw.get("blas", {}).get("blas_name", "")),
                str(hw.get("gpu", "") or "none"),
                ", ".join(sorted(r["suite"] for r in rs)),
            ]
        )
    return table(["machine", "CPU", "cores", "caches", "BLAS", "GPU", "suites"], out)


def render() -> str:
    results = [bench.load_results(p) for p in sorted(bench.RESULTS_DIR.glob("*.json"))]
    lines = [INTRO]
    if not results:
        return "\n".join(lines + ["No results are recorded yet.\n"])
    lines += ["## The machines\n"] + machines_table(results)
    for suite, (title, summary) in SUMMARIES.items():
        found = [r for r in results if r["suite"] == suite]
        if not found:
            continue
        lines.append(f"## {title}\n")
        for result in found:
            name = f"{result['machine']}--{suite}.json"
            lines.append(f"### {result['machine']}\n")
            lines.append(
                f"Recorded {result['hardware'].get('date', '?')[:10]} with "
                f"`{result['command']}`; every row: "
                f"{{download}}`{name} <../benchmarks/results/{name}>`.\n"
            )
            lines += summary(result["rows"])
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only check the page is up to date"
    )
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run `make results`")
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
