"""Chapter 02's experiments: the plain and the fast scalar GPT side by side, and a full run.

graph_size(root)            nodes and edges of the graph behind a loss
STEP_VARIANTS               (implementation, pause the collector?) pairs compared
side_by_side(docs, ...)     one model per variant, trained in step, one row each
training_curve(docs, ...)   the fast implementation's whole run: losses, speed, samples
suite_scalar_gpt(options)   python -m microgpt_lib.bench scalar-gpt
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

from . import bench
from .autograd import Value, topological_order
from .config import GPTConfig, TrainConfig
from .data import CharTokenizer, load_names, shuffled
from .scalar_gpt import (
    FAST,
    Adam,
    ScalarGPT,
    StepStats,
    document_loss,
    sample,
    train,
    train_step,
)

# the phases of a step, as StepStats names them: forward, backward, optimizer, free
PHASES = tuple(
    f.name.removesuffix("_s") for f in fields(StepStats) if f.name.endswith("_s")
)

# (implementation, pause the collector?): each implementation as it ships, then the other setting
STEP_VARIANTS = (("plain", False), ("plain", True), ("fast", True), ("fast", False))


def graph_size(root: Value) -> tuple[int, int]:
    """(nodes, edges) of the graph behind ``root``, parameters and constants included."""
    order = topological_order(root)
    return len(order), sum(len(v._children) for v in order)


@dataclass
class _Run:
    """One variant's model, optimizer and what its steps measured."""

    impl: str
    paused: bool
    model: ScalarGPT
    opt: Adam
    steps: list[StepStats] = field(default_factory=list)
    gc: bench.GCMeter = field(default_factory=bench.GCMeter)  # summed over the steps

    def step(self, tokens: list[int], lr: float) -> None:
        with bench.GCMeter() as meter:
            self.steps.append(
                train_step(self.model, self.opt, tokens, lr, self.impl, self.paused)
            )
        for g in range(3):
            self.gc.collections[g] += meter.collections[g]
            self.gc.seconds_by_generation[g] += meter.seconds_by_generation[g]


def side_by_side(
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    steps: int,
    *,
    seed: int = 42,
    variants: Sequence[tuple[str, bool]] = STEP_VARIANTS,
    count_nodes: bool = True,
) -> list[dict[str, Any]]:
    """Train one model per variant from the same seed on the same names, interleaving them step
    by step (so a busy machine slows them alike), and return one row per variant.

    Each row: impl, gc, steps, ms_per_step (median) with median_s/min_s/max_s, the median of each
    phase in ms, collections and GC ms per step (in all and by generation), nodes and edges per
    step (mean), the losses, the largest loss difference from the first variant, and the
    speed-up over the first variant.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    config = GPTConfig(vocab_size=tokenizer.vocab_size)
    recipe = TrainConfig(steps=steps, seed=seed)
    order = shuffled(docs, seed)
    runs = []
    for impl, paused in variants:
        model = ScalarGPT.init(config, seed)
        runs.append(_Run(impl, paused, model, Adam(model.parameters(), recipe)))
    sizes: dict[str, list[tuple[int, int]]] = {impl: [] for impl, _ in variants}
    for step in range(steps):
        tokens = tokenizer.encode_document(order[step % len(order)])
        for k in range(len(runs)):  # rotate who goes first
            runs[(step + k) % len(runs)].step(tokens, recipe.lr_at(step))
        if count_nodes:
            for impl in sizes:
                with bench.paused_gc():
                    sizes[impl].append(
                        graph_size(document_loss(runs[0].model, tokens, impl))
                    )
    reference = bench.Timing.from_times([s.total_s for s in runs[0].steps])
    rows = []
    for run in runs:
        timing = bench.Timing.from_times([s.total_s for s in run.steps])
        row: dict[str, Any] = {
            "kind": "step",
            "impl": run.impl,
            "gc": bench.gc_label(run.paused),
            "steps": steps,
            "ms_per_step": 1e3 * timing.median_s,
            "median_s": timing.median_s,
            "min_s": timing.min_s,
            "max_s": timing.max_s,
        }
        for phase in PHASES:
            row[f"{phase}_ms"] = 1e3 * statistics.median(
                getattr(s, f"{phase}_s") for s in run.steps
            )
        row["gc_runs_per_step"] = run.gc.total / steps
        row["gc_ms_per_step"] = 1e3 * run.gc.seconds / steps
        row["gc_runs_by_generation"] = [
            n / steps for n in run.gc.collections
        ]  # generations 0-2
        row["gc_ms_by_generation"] = [
            1e3 * s / steps for s in run.gc.seconds_by_generation
        ]
        if count_nodes:
            row["nodes_per_step"] = statistics.fmean(n for n, _ in sizes[run.impl])
            row["edges_per_step"] = statistics.fmean(e for _, e in sizes[run.impl])
        row["losses"] = [s.loss for s in run.steps]
        row["max_loss_diff"] = max(
            abs(a.loss - b.loss) for a, b in zip(run.steps, runs[0].steps)
        )
        row["speedup"] = reference.median_s / timing.median_s
        rows.append(row)
    return rows


def training_curve(
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    recipe: TrainConfig,
    *,
    samples: int = 20,
    temperature: float = 0.5,
    progress: bool = False,
) -> dict[str, Any]:
    """A full training run of the fast implementation, as one row: every step's loss, the
    median ms per step, and names sampled at the end."""
    model = ScalarGPT.init(GPTConfig(vocab_size=tokenizer.vocab_size), recipe.seed)
    log = train(model, docs, tokenizer, recipe, FAST, progress=progress)
    timing = bench.Timing.from_times([s.total_s for s in log.steps])
    return {
        "kind": "curve",
        "impl": "fast",
        "gc": bench.gc_label(FAST.pause_gc),
        "steps": recipe.steps,
        "ms_per_step": log.median_ms,
        "median_s": timing.median_s,
        "min_s": timing.min_s,
        "max_s": timing.max_s,
        "total_s": sum(timing.times_s),
        "seed": recipe.seed,
        "lr": recipe.lr,
        "losses": log.losses,
        "temperature": temperature,
        "samples": sample(model, tokenizer, samples, temperature, recipe.seed),
    }


def suite_scalar_gpt(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """The plain and the fast step side by side on the same names (with the garbage collector
    on and off), then the fast implementation's training run of options.steps steps (default
    1,000, microgpt's recipe; 20 when quick), its losses and samples stored in the last row."""
    docs = load_names()
    tokenizer = CharTokenizer.from_documents(docs)
    rows = side_by_side(docs, tokenizer, 3 if options.quick else 15)
    steps = options.steps or (20 if options.quick else TrainConfig().steps)
    rows.append(
        training_curve(
            docs, tokenizer, TrainConfig(steps=steps), progress=sys.stderr.isatty()
        )
    )
    return rows
