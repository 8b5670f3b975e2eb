"""Chapter 10's measurements: what each piece of a real training run buys, in numbers.

step_rows(...)          ms per step and tokens/s: numpy vs torch, each preset, each dtype
batch_rows(...)         tokens/s against the batch size (torch on the CPU)
run_rows(...)           short runs side by side: schedules, clipping, accumulation, bf16
compile_rows(...)       torch.compile: its first step and its steady steps, against eager
kv_cache_rows(...)      generation tokens/s with and without the KV cache, per prompt length
ddp_rows(...)           one process against torchrun with N gloo processes, same settings
makemore_rows(...)      makemore's transformer timed on this machine beside ours
names_run(...)          the ``names`` preset trained to the end: its curve and samples
check_top_k, check_sampling_probs, check_micro_batches   the exercises' checkers
suite_train(options)    ``python -m microgpt_lib.bench train``
"""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import bench, machine, train
from . import device as devices
from .config import GPTConfig, init_weights
from .data import load_names

QUIET = dict(
    eval_interval=0, log_interval=10**9
)  # no evaluation, no checkpoints, no lines


def _timed_run(
    settings: train.TrainSettings, documents: Sequence[str], warmup: int = 3
) -> dict[str, Any]:
    """A short run with no evaluation: its median step (after ``warmup`` steps) and tokens/s."""
    with tempfile.TemporaryDirectory() as out:
        result = train.train(
            settings.replace(out_dir=out, **QUIET), documents, verbose=False
        )
    steps = result.log.steps[warmup:] or result.log.steps
    timing = bench.Timing.from_times([s["ms"] / 1e3 for s in steps])
    tokens = statistics.mean(s["tokens"] for s in steps)
    return {
        "ms_per_step": 1e3 * timing.median_s,
        **timing.as_row(),
        "tokens_per_s": tokens / timing.median_s,
        "losses": result.log.losses,
        "fused_optimizer": result.backend.fused,
    }


def step_rows(
    documents: Sequence[str],
    steps: int = 20,
    presets: Sequence[str] = ("microgpt", "names"),
    variants: Sequence[tuple[str, str]] = (
        ("numpy", "float64"),
        ("numpy", "float32"),
        ("torch", "float64"),
        ("torch", "float32"),
        ("torch", "bfloat16"),
    ),
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """One row per preset, backend and dtype: ms per step, tokens per second."""
    rows = []
    for preset in presets:
        for backend, dtype in variants:
            s = train.settings_from(
                preset=preset,
                backend=backend,
                dtype=dtype,
                device=device,
                max_iters=steps,
                warmup_iters=0,
            )
            rows.append(
                {
                    "kind": "step",
                    "preset": preset,
                    "backend": backend,
                    "device": device,
                    "dtype": dtype,
                    "batch": s.batch_size,
                    "steps": steps,
                    **_timed_run(s, documents),
                }
            )
    return rows


def batch_rows(
    documents: Sequence[str], sizes: Sequence[int], steps: int = 10, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Tokens per second of the ``names`` model against the batch size."""
    rows = []
    for size in sizes:
        s = train.settings_from(
            batch_size=size, max_iters=steps, warmup_iters=0, device=device
        )
        rows.append(
            {"kind": "batch", "device": device, "batch": size, "steps": steps}
            | _timed_run(s, documents)
        )
    return rows


RUNS: dict[str, dict[str, Any]] = {
    # what each short run changes from the names preset
    "warm-up + cosine": {},
    "constant lr": dict(schedule="constant"),
    "no clipping, lr 0.03": dict(learning_rate=0.03, min_lr=3e-3, grad_clip=0.0),
    "clipping at 1, lr 0.03": dict(learning_rate=0.03, min_lr=3e-3, grad_clip=1.0),
    "batch 32 as 4 x 8": dict(gradient_accumulation_steps=4),
    "bfloat16 autocast": dict(dtype="bfloat16"),
}


def run_rows(
    documents: Sequence[str],
    names: Sequence[str] = tuple(RUNS),
    max_iters: int = 600,
    eval_interval: int = 100,
) -> list[dict[str, Any]]:
    """Short runs of the names preset, each changing one thing (RUNS), with their eval curves
    and step times: what a schedule, clipping, accumulation or bf16 does to the loss."""
    rows = []
    for name in names:
        s = train.settings_from(
            **{
                "max_iters": max_iters,
                "eval_interval": eval_interval,
                "warmup_iters": min(100, max_iters // 10),
                **RUNS[name],
            }
        )
        with tempfile.TemporaryDirectory() as out:
            result = train.train(s.replace(out_dir=out), documents, verbose=False)
        steps = result.log.steps
        norms = [x["norm"] for x in steps if not math.isnan(x["norm"])]
        rows.append(
            {
                "kind": "run",
                "run": name,
                "changes": RUNS[name],
                "max_iters": max_iters,
                "ms_per_step": statistics.median(x["ms"] for x in steps[3:]),
                "losses": result.log.losses,
                "evals": result.log.evals,
                "final_val": result.log.evals[-1]["val"],
                "best_val": result.log.best_val,
                "median_grad_norm": statistics.median(norms) if norms else None,
                "clipped_fraction": (
                    sum(n > s.grad_clip for n in norms) / len(norms)
                    if norms and s.grad_clip
                    else 0.0
                ),
            }
        )
    return rows


def compile_rows(
    documents: Sequence[str], steps: int = 100, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Eager against torch.compile on the names preset: the first step (compiling) and the
    steady steps after it. Batches vary in length, so the compiler sees several shapes."""
    rows = []
    for compiled in (False, True):
        s = train.settings_from(
            compile=compiled, max_iters=steps, warmup_iters=0, device=device
        )
        with tempfile.TemporaryDirectory() as out:
            result = train.train(
                s.replace(out_dir=out, **QUIET), documents, verbose=False
            )
        times = [x["ms"] for x in result.log.steps]
        steady = times[steps // 2 :]
        rows.append(
            {
                "kind": "compile",
                "compile": compiled,
                "compiled": result.backend.compiled,
                "device": device,
                "steps": steps,
                "first_step_ms": times[0],
                "ms_per_step": statistics.median(steady),
                "min_ms": min(steady),
                "total_s": sum(times) / 1e3,
            }
        )
    return rows


def kv_cache_rows(
    prompt_lengths: Sequence[int] = (1, 16, 32, 48),
    batches: Sequence[int] = (64,),
    block_size: int = 64,
    repeats: int = 5,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Generating up to ``block_size`` tokens after a prompt, ``batch`` sequences at once, with
    and without the cache (names-preset shape, random weights: speed does not depend on them),
    taking turns; tokens per second counts the new tokens."""
    config = GPTConfig(
        vocab_size=27, block_size=block_size, n_layer=4, n_embd=64, n_head=4
    )
    dev = torch.device(device)
    model = train.TorchGPT.from_weights(config, init_weights(config, 0)).to(dev).eval()
    rows = []
    for batch in batches:
        for length in prompt_lengths:
            if not 1 <= length < block_size:
                raise ValueError(
                    f"prompt lengths must be in [1, {block_size}), got {length}"
                )
            new = block_size + 1 - length
            prompt = torch.randint(0, 27, (batch, length), device=dev)
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(repeats):
                for use_cache in (True, False):
                    g = torch.Generator(device=dev).manual_seed(0)
                    t0 = time.perf_counter()
                    train.generate(model, prompt, new, 1.0, 0, g, use_cache)
                    times[use_cache].append(time.perf_counter() - t0)
            cached, recomputed = (statistics.median(times[c]) for c in (True, False))
            rows.append(
                {
                    "kind": "kv-cache",
                    "device": device,
                    "block_size": block_size,
                    "batch": batch,
                    "prompt": length,
                    "new_tokens": new,
                    "cached_tokens_per_s": batch * new / cached,
                    "recomputed_tokens_per_s": batch * new / recomputed,
                    "speedup": recomputed / cached,
                    "repeats": repeats,
                }
            )
    return rows


def torchrun_command() -> list[str]:
    """torchrun as installed beside this Python (the venv's), else on the PATH."""
    local = Path(sys.executable).with_name("torchrun")
    return [str(local)] if local.exists() else [shutil.which("torchrun") or "torchrun"]


def ddp_rows(
    args: Sequence[str], processes: Sequence[int] = (1, 2), threads_per_process: int = 1
) -> list[dict[str, Any]]:
    """The same command line in one process and under torchrun with N gloo processes (each
    ``threads_per_process`` threads): every step's loss (from the last checkpoint's log, at
    full precision) and ms per step. One evaluation at the end writes that checkpoint."""
    settings = train.settings_from(args)
    rows, reference = [], None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process)}
    for n in processes:
        with tempfile.TemporaryDirectory() as out:
            common = [
                "-m", "microgpt_lib.train", *args, f"--eval_interval={settings.max_iters}",
                "--eval_iters=1", f"--out_dir={out}",
            ]  # fmt: skip
            if n == 1:
                command = [sys.executable, *common]
            else:
                command = [*torchrun_command(), "--nproc_per_node", str(n), *common]
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if done.returncode:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
            steps = train.load_checkpoint(Path(out) / "last.pt")["log"]["steps"]
        losses = [x["loss"] for x in steps]
        reference = reference or losses
        rows.append(
            {
                "kind": "ddp",
                "processes": n,
                "threads_per_process": threads_per_process,
                "args": list(args),
                "ms_per_step": statistics.median(x["ms"] for x in steps[3:]),
                "wall_s": wall,
                "losses": losses,
                "max_loss_diff": max(abs(a - b) for a, b in zip(losses, reference)),
            }
        )
    return rows


# makemore imports tensorboard only to log; a stand-in that does nothing lets it run unchanged
_MAKEMORE_RUNNER = """
import runpy, sys, types
board = types.ModuleType("torch.utils.tensorboard")
class SummaryWriter:
    def __init__(self, *args, **kwargs): pass
    def __getattr__(self, name): return lambda *args, **kwargs: None
board.SummaryWriter = SummaryWriter
sys.modules["torch.utils.tensorboard"] = board
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def makemore_rows(
    script: str | os.PathLike, names_file: str | os.PathLike, steps: int = 301
) -> list[dict[str, Any]]:
    """Karpathy's makemore (its default transformer: 4 layers, 64 wide, 4 heads, batch 32,
    AdamW) run here on its own names.txt, and our names preset on the same file, one after
    the other. makemore prints a step's time every 10 steps; the median of those is compared
    with ours over the same steps. Neither evaluates during the timed steps."""
    script, names_file = Path(script), Path(names_file)
    for path in (script, names_file):
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    pattern = re.compile(r"^step (\d+) \| loss ([0-9.]+) \| step time ([0-9.]+)ms$")
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-c", _MAKEMORE_RUNNER, str(script), "-i", str(names_file),
            "-o", out, "--max-steps", str(steps), "--num-workers", "0",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if done.returncode:
        raise RuntimeError(f"makemore failed:\n{done.stderr[-2000:]}")
    theirs = [
        float(m.group(3))
        for m in map(pattern.match, done.stdout.splitlines())
        if m and int(m.group(1)) >= 10
    ]
    docs = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    s = train.settings_from(max_iters=steps, warmup_iters=0)
    ours = _timed_run(s, docs, warmup=10)
    theirs_ms = statistics.median(theirs)
    return [
        {
            "kind": "makemore",
            "impl": "makemore transformer",
            "steps": steps,
            "ms_per_step": theirs_ms,
            "samples": len(theirs),
        },
        {
            "kind": "makemore",
            "impl": "ours (names preset, torch)",
            "steps": steps,
            "ms_per_step": ours["ms_per_step"],
            "samples": ours["repeats"],
            "speedup_vs_makemore": theirs_ms / ours["ms_per_step"],
        },
    ]


def names_run(
    documents: Sequence[str],
    out_dir: str | os.PathLike,
    progress: bool = False,
    **changes,
) -> tuple[train.RunResult, list[dict[str, Any]]]:
    """The names preset trained to its end (changes override it), with its eval curve and
    samples as one row; checkpoints go to out_dir."""
    s = train.settings_from(out_dir=str(out_dir), **changes)
    result = train.train(s, documents, progress=progress, verbose=False)
    model = result.torch_model()
    samples = train.sample_names(model, result.dataset.tokenizer, 20, temperature=0.8)
    log = result.log
    reached = next((e for e in log.evals if e["val"] <= 2.0), None)
    row = {
        "kind": "names-run",
        "max_iters": s.max_iters,
        "batch": s.batch_size,
        "seconds": sum(x["ms"] for x in log.steps) / 1e3,
        "ms_per_step": log.median_ms,
        "evals": log.evals,
        "losses": log.losses[:: max(1, len(log.losses) // 500)],
        "best_val": log.best_val,
        "val_2_0_at_iter": reached["iter"] if reached else None,
        "val_2_0_at_s": reached["seconds"] if reached else None,
        "samples": samples,
    }
    return result, [row]


# --------------------------------------------------------------------------------------------
# exercises


def check_top_k(top_k: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Exercise: top-k filtering. Each row keeps its k largest logits unchanged, every other
    entry becomes -inf; the input is not modified."""
    g = torch.Generator().manual_seed(0)
    for shape, k in [((1, 27), 1), ((4, 27), 5), ((3, 10), 10), ((2, 6), 3)]:
        logits = torch.randn(shape, generator=g)
        before = logits.clone()
        got = top_k(logits, k)
        assert torch.equal(logits, before), "top_k must not change its input (use a copy)"
        assert got.shape == logits.shape, (
            f"expected shape {tuple(shape)}, got {tuple(got.shape)}"
        )
        kept = torch.isfinite(got).sum(dim=-1)
        assert (kept == k).all(), (
            f"with k={k} each row should keep {k} logits, rows kept {kept.tolist()}: "
            "filter each row on its own k-th largest value, not the whole batch's"
        )
        want = train.top_k_logits(logits, k)
        assert torch.equal(got, want), "the kept logits must be the k largest, unchanged"
    return "check_top_k: the k largest logits of every row kept, the rest -inf (4 cases)"


def check_sampling_probs(
    probs: Callable[[torch.Tensor, float, int], torch.Tensor],
) -> str:
    """Exercise: ``probs(logits, temperature, top_k)``, the distribution a token is drawn
    from: softmax(logits / temperature) over each row's top_k logits (0: all), 0 elsewhere.
    Compared with ``train.sampling_probs`` at three temperatures, with and without top-k."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 27, generator=g, dtype=torch.float64) * 3
    for temperature in (0.5, 1.0, 2.0):
        for top_k in (0, 1, 5):
            got = probs(logits.clone(), temperature, top_k)
            want = train.sampling_probs(logits, temperature, top_k)
            assert got.shape == want.shape, f"expected shape {tuple(want.shape)}"
            sums = got.sum(dim=-1)
            assert torch.allclose(sums, torch.ones_like(sums), atol=1e-9), (
                f"temperature {temperature}, top_k {top_k}: rows sum to {sums.tolist()[:2]}, "
                "not 1: after keeping the top k, the softmax must run over those alone"
            )
            assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-9), (
                f"temperature {temperature}, top_k {top_k}: not the expected distribution"
                + (
                    " (a temperature above 1 must flatten it: divide the logits by it)"
                    if temperature != 1.0
                    else ""
                )
            )
    return "check_sampling_probs: softmax(logits / T) over the top k (9 settings)"


def check_micro_batches(split: Callable[[list, int, int, int], list]) -> str:
    """Exercise: ``split(docs, micro_steps, rank, world)`` gives one process its micro-batches.
    Over all ranks every document of the global batch is used exactly once, each micro-batch
    has len(docs) // (micro_steps * world) documents, and each rank gets its own."""
    for size, micro, world in [(32, 1, 1), (32, 4, 1), (32, 2, 2), (24, 3, 4), (8, 1, 8)]:
        docs = [[i] for i in range(size)]
        shares = [split(docs, micro, r, world) for r in range(world)]
        for r, share in enumerate(shares):
            assert len(share) == micro, f"rank {r} should get {micro} micro-batches"
            for b in share:
                assert len(b) == size // (micro * world), (
                    f"micro-batches of {size} documents over {micro} x {world} should hold "
                    f"{size // (micro * world)}, got {len(b)}"
                )
        used = sorted(d[0] for share in shares for b in share for d in b)
        assert used == list(range(size)), (
            f"batch {size}, {micro} micro-steps, {world} ranks: the documents used are "
            f"{used}, not each of 0..{size - 1} once"
        )
    return "check_micro_batches: every document once, equal shares (5 splits)"


# --------------------------------------------------------------------------------------------
# the suite


def suite_train(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """Chapter 10 on this machine: step times per backend and dtype, the batch sweep, short runs
    (schedule, clipping, accumulation, bf16), torch.compile, the KV cache, DDP on 2 CPU
    processes, the same steps on each GPU torch finds (CUDA, MPS), makemore beside ours (when
    MICROGPT_MAKEMORE names makemore.py, with its names.txt beside it) and, unless quick, the
    names preset trained to the end."""
    docs = load_names()
    quick = options.quick
    steps = options.steps or (5 if quick else 30)
    rows = step_rows(docs, steps=steps)
    rows += batch_rows(
        docs, options.sizes or ((8, 32) if quick else (1, 4, 16, 32, 64, 128, 256))
    )
    rows += run_rows(
        docs, max_iters=60 if quick else 1500, eval_interval=30 if quick else 100
    )
    rows += compile_rows(docs, steps=20 if quick else 300)
    rows += kv_cache_rows(repeats=1 if quick else 5)
    rows += kv_cache_rows((1,), batches=(1, 4, 16, 256), repeats=1 if quick else 5)
    ddp_args = [
        f"--max_iters={12 if quick else 100}",
        "--warmup_iters=5",
        "--eval_interval=0",
    ]
    rows += ddp_rows(ddp_args)
    rows += ddp_rows(ddp_args, processes=(1,), threads_per_process=2)
    for device in devices.available_devices():
        if device == "cpu":
            continue
        dtypes = ["float32", "bfloat16"] + (["float16"] if device == "cuda" else [])
        variants = [("torch", d) for d in dtypes]
        rows += step_rows(docs, steps=steps, variants=variants, device=device)
        rows += batch_rows(docs, options.sizes or (32, 256, 1024), device=device)
        rows += kv_cache_rows(repeats=1 if quick else 5, device=device)
    makemore = machine.setting("MICROGPT_MAKEMORE")
    if makemore:
        script = Path(makemore)
        rows += makemore_rows(script, script.with_name("names.txt"), 31 if quick else 301)
    if not quick:
        with tempfile.TemporaryDirectory() as out:
            rows += names_run(docs, out, max_iters=options.steps or 20000)[1]
    return rows
