"""Chapter 09's experiments: the matrix GPT against chapter 02's fast scalar step, batching,
float32, and the exercises' checkers.

STEPS                        the implementations compared: chapter 02's fast scalar step, then
                             the Tensor step, the hand-fused one and the compiled one
side_by_side(docs, ...)      one model per implementation, trained in step, one row each
graph_size(loss)             nodes and edges of a Tensor graph (chapter 02's: tens of thousands)
step_profile(...)            where a Tensor step's time goes, by function (cProfile)
batch_rows(docs, ...)        tokens per second against the batch size, per dtype
check_silu, check_rmsnorm_gain   the exercises' checkers (reference solutions beside them)
suite_gpt(options)           python -m microgpt_lib.bench gpt
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
from typing import Any, Callable, Sequence

import numpy as np

from . import bench, gpt, machine, scalar_gpt
from .config import GPTConfig, TrainConfig
from .data import CharTokenizer, load_names
from .tensor import Tensor, check_gradients, make_node, rmsnorm, topological_order

# name -> what it is; "scalar-fast" is the yardstick every speed-up is measured against
STEPS = {
    "scalar-fast": "chapter 02's fast scalar step (fused Value nodes, GC paused)",
    "tensor": "numpy arrays through the Tensor autograd",
    "fused": "forward and backward by hand over whole arrays, no graph",
    "compiled": "the whole step as loops, compiled by numba",
}


def graph_size(root: Tensor) -> tuple[int, int]:
    """(nodes, edges) of the graph behind ``root``, its parameters included."""
    order = topological_order(root)
    return len(order), sum(len(t._children) for t in order)


def side_by_side(
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    steps: int,
    *,
    seed: int = 42,
    impls: Sequence[str] = tuple(STEPS),
    block: int = 5,
) -> list[dict[str, Any]]:
    """microgpt's recipe (one name per step, float64) with each implementation, all from the
    same weights on the same names, taking turns ``block`` steps at a time (a busy machine
    slows them alike). One row each: ms per step (median), the phases, the losses, the
    largest loss difference from the first, and the speed-up over chapter 02's fast scalar
    step.

    Turns of several steps, not one: a scalar step walks a hundred thousand objects and leaves
    the caches cold, and a Tensor step right after it would pay for that, which no real run
    of the Tensor step does. The median step of a turn is a warm one."""
    if steps < 1 or block < 1:
        raise ValueError(f"steps and block must be >= 1, got {steps} and {block}")
    unknown = [i for i in impls if i not in STEPS]
    if unknown:
        raise ValueError(
            f"unknown implementation {unknown[0]!r}; they are {', '.join(STEPS)}"
        )
    config = GPTConfig(vocab_size=tokenizer.vocab_size)
    recipe = TrainConfig(steps=steps, seed=seed)
    first, order, _ = gpt.start_run(docs, config, seed)
    weights = first.weights()
    runners: dict[str, Callable[[list[int], float], Any]] = {}
    for impl in impls:
        if impl == "scalar-fast":
            model = scalar_gpt.ScalarGPT.from_weights(
                config, weights.map(lambda m: m.tolist())
            )
            adam = scalar_gpt.make_optimizer(model, recipe)
            runners[impl] = lambda tokens, lr, m=model, a=adam: scalar_gpt.train_step(
                m, a, tokens, lr, "fast"
            )
        else:
            model = gpt.MatrixGPT.from_weights(config, weights)
            opt = gpt.make_optimizer(model, recipe)
            runners[impl] = (
                lambda tokens, lr, m=model, o=opt, f=gpt.IMPLEMENTATIONS[impl]: f(
                    m, o, gpt.make_batch([tokens], config), lr
                )
            )
    stats: dict[str, list[Any]] = {impl: [] for impl in impls}
    names = list(runners)
    for start in range(0, steps, block):
        block_steps = range(start, min(start + block, steps))
        for k in range(len(names)):  # rotate who goes first
            impl = names[(start // block + k) % len(names)]
            for step in block_steps:
                tokens = tokenizer.encode_document(order[step % len(order)])
                stats[impl].append(runners[impl](tokens, recipe.lr_at(step)))
    timings = {i: bench.Timing.from_times([s.total_s for s in stats[i]]) for i in impls}
    yardstick = timings.get("scalar-fast")
    rows = []
    for impl in impls:
        timing, losses = timings[impl], [s.loss for s in stats[impl]]
        rows.append(
            {
                "kind": "step",
                "impl": impl,
                "what": STEPS[impl],
                "batch": 1,
                "dtype": "float64",
                "steps": steps,
                "ms_per_step": 1e3 * timing.median_s,
                **timing.as_row(),
                "forward_ms": 1e3 * statistics.median(s.forward_s for s in stats[impl]),
                "backward_ms": 1e3 * statistics.median(s.backward_s for s in stats[impl]),
                "optimizer_ms": 1e3
                * statistics.median(s.optimizer_s for s in stats[impl]),
                "losses": losses,
                "max_loss_diff": max(
                    abs(a - b.loss) for a, b in zip(losses, stats[impls[0]])
                ),
                "speedup_vs_scalar_fast": (
                    yardstick.median_s / timing.median_s if yardstick else None
                ),
            }
        )
    return rows


def step_profile(
    model: gpt.MatrixGPT, batch: gpt.Batch, steps: int = 20, top: int = 12
) -> list[dict[str, Any]]:
    """Where a Tensor step's time goes: cProfile over ``steps`` steps (on a copy of the model),
    the ``top`` functions by their own time (not counting what they call), in µs per step."""
    twin = gpt.MatrixGPT.from_weights(model.config, model.weights(), str(model.dtype))
    opt = gpt.make_optimizer(twin)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        gpt.train_step(twin, opt, batch, 0.01)
    profiler.disable()
    stats = pstats.Stats(
        profiler
    ).stats  # (file, line, name) -> (cc, calls, tottime, cumtime, _)
    total = sum(v[2] for v in stats.values())
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in sorted(
        stats.items(), key=lambda kv: -kv[1][2]
    )[:top]:
        where = path.rsplit("/", 1)[-1] if path != "~" else "built-in"
        rows.append(
            {
                "function": f"{name} ({where}:{line})" if line else name,
                "calls_per_step": calls / steps,
                "own_us_per_step": 1e6 * own / steps,
                "cumulative_us_per_step": 1e6 * cumulative / steps,
                "share": own / total,
            }
        )
    return rows


def batch_rows(
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    batch_sizes: Sequence[int],
    dtypes: Sequence[str] = ("float32", "float64"),
    steps: int = 5,
    seed: int = 42,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Tokens per second of the Tensor step against the batch size: ``steps`` training steps
    (after one warm-up) per batch size and dtype, median step time, numpy's BLAS on
    ``threads`` threads (None: as it is). A token is one real (unpadded) position trained on.

    On a machine shared with other work, more BLAS threads than free cores make the big
    batches slower and noisier, not faster (idle OpenBLAS workers spin): pass threads=1."""
    config = GPTConfig(vocab_size=tokenizer.vocab_size)
    rows = []
    with machine.limit_blas_threads(threads):
        rows = _batch_rows(docs, tokenizer, config, batch_sizes, dtypes, steps, seed)
    return rows


def _batch_rows(
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    config: GPTConfig,
    batch_sizes: Sequence[int],
    dtypes: Sequence[str],
    steps: int,
    seed: int,
) -> list[dict[str, Any]]:
    rows = []
    blas = machine.blas_threads()
    for dtype in dtypes:
        bench.check_dtype(dtype)
        for size in batch_sizes:
            model, order, _ = gpt.start_run(docs, config, seed, dtype)
            opt = gpt.make_optimizer(model)
            source = gpt.batches(order, tokenizer, config, size)
            gpt.train_step(model, opt, next(source), 0.01)  # warm-up
            done = [gpt.train_step(model, opt, next(source), 0.01) for _ in range(steps)]
            timing = bench.Timing.from_times([s.total_s for s in done])
            tokens = statistics.median(s.tokens for s in done)
            rows.append(
                {
                    "kind": "batch",
                    "impl": "tensor",
                    "dtype": dtype,
                    "batch": size,
                    "threads": blas,
                    "steps": steps,
                    "ms_per_step": 1e3 * timing.median_s,
                    **timing.as_row(),
                    "tokens_per_step": tokens,
                    "tokens_per_s": sum(s.tokens for s in done) / sum(timing.times_s),
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# exercises: each checker takes the reader's function; the reference solutions live here too


def reference_silu(x: Tensor) -> Tensor:
    """silu(x) = x * sigmoid(x) as one node: d/dx = sigma + x * sigma * (1 - sigma)."""
    sig = 1.0 / (1.0 + np.exp(-x.data))
    return make_node(
        x.data * sig, "silu", (x,), lambda g: (g * (sig + x.data * sig * (1 - sig)),)
    )


def _composed_silu(x: Tensor) -> Tensor:
    return x / ((-x).exp() + 1.0)


def check_silu(silu: Callable[[Tensor], Tensor]) -> str:
    """Exercise: SiLU as one Tensor node with a hand-derived gradient (``make_node``). Its
    output must be one node whose only child is x; values match x * sigmoid(x) built from
    Tensor ops, and gradients match finite differences and the composed version."""
    rng = np.random.default_rng(0)
    for shape in [(5,), (2, 3), (2, 2, 4)]:
        data = rng.uniform(-4, 4, shape)
        weights = rng.normal(size=shape)
        x = Tensor(data)
        out = silu(x)
        assert isinstance(out, Tensor) and out.shape == shape, (
            f"silu should return a Tensor of shape {shape} for an input of shape {shape}"
        )
        assert out._children == (x,), (
            "silu should be one node whose only child is x (use make_node), "
            f"got an op {out.op!r} with {len(out._children)} children"
        )
        np.testing.assert_allclose(
            out.data, _composed_silu(Tensor(data)).data, rtol=1e-12
        )
        try:
            got = check_gradients(lambda t: (silu(t[0]) * weights).sum(), [data])[0]
        except AssertionError as error:
            raise AssertionError(
                f"silu's gradient disagrees with finite differences: {error}. "
                "Remember the product rule: d(x * s)/dx = s + x * ds/dx"
            ) from None
        y = Tensor(data)
        (_composed_silu(y) * weights).sum().backward()
        np.testing.assert_allclose(got, y.grad, rtol=1e-9, atol=1e-12)
    return "check_silu: one node, values and gradients match (3 shapes)"


def reference_rmsnorm_gain(x: Tensor, gain: Tensor, eps: float = 1e-5) -> Tensor:
    """gain * x * s over the last axis, one node with children (x, gain).

    With y = x * s: d/dx = s * (gg - y * mean(gg * y)) where gg = g * gain, and d/dgain =
    g * y, which backward sums over the leading axes to gain's shape."""
    s = 1.0 / np.sqrt((x.data * x.data).mean(axis=-1, keepdims=True) + eps)
    y = x.data * s

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gg = g * gain.data
        return s * (gg - y * (gg * y).mean(axis=-1, keepdims=True)), g * y

    return make_node(y * gain.data, "rmsnorm_gain", (x, gain), grad_fn)


def check_rmsnorm_gain(rmsnorm_gain: Callable[[Tensor, Tensor, float], Tensor]) -> str:
    """Exercise: RMSNorm with a learned gain (one number per channel), one node. Compared with
    ``rmsnorm(x) * gain`` from the library's ops: values, and gradients for x and the gain."""
    rng = np.random.default_rng(1)
    eps = 1e-5
    for shape in [(4,), (3, 5), (2, 3, 8)]:
        x_data = rng.uniform(-2, 2, shape)
        gain_data = rng.uniform(0.5, 1.5, shape[-1])  # never 1: a missing gain shows
        weights = rng.normal(size=shape)
        x, gain = Tensor(x_data), Tensor(gain_data)
        out = rmsnorm_gain(x, gain, eps)
        assert isinstance(out, Tensor) and out.shape == shape, (
            f"rmsnorm_gain should return a Tensor of shape {shape}"
        )
        assert len(topological_order(out)) <= 3, (
            "rmsnorm_gain should be one node with children x and gain (use make_node)"
        )
        (out * weights).sum().backward()
        x2, gain2 = Tensor(x_data), Tensor(gain_data)
        want = rmsnorm(x2, eps) * gain2
        (want * weights).sum().backward()
        np.testing.assert_allclose(out.data, want.data, rtol=1e-12)
        for name, got, expected in (
            ("x", x.grad, x2.grad),
            ("gain", gain.grad, gain2.grad),
        ):
            if not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
                raise AssertionError(
                    f"the gradient for {name} (input {shape}) is off by up to "
                    f"{np.abs(got - expected).max():.3g}: "
                    + (
                        "the gain scales g before it goes through the norm's gradient"
                        if name == "x"
                        else "d(out)/d(gain) is the normalised x, summed over positions"
                    )
                )
    return "check_rmsnorm_gain: values and gradients (x and gain) match rmsnorm(x) * gain"


# --------------------------------------------------------------------------------------------
# the suite


BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def suite_gpt(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """microgpt's recipe with each implementation side by side against chapter 02's fast
    scalar step (options.steps steps; default 30, 4 when quick), then tokens per second of
    the Tensor step for each batch size (options.sizes; default 1 to 256, 1 and 8 when quick)
    in each dtype (options.dtypes; default float32 and float64), BLAS on options.threads."""
    docs = load_names()
    tokenizer = CharTokenizer.from_documents(docs)
    steps = options.steps or (4 if options.quick else 30)
    rows = side_by_side(docs, tokenizer, steps)
    sizes = options.sizes or ((1, 8) if options.quick else BATCH_SIZES)
    dtypes = options.dtypes or ("float32", "float64")
    rows += batch_rows(
        docs, tokenizer, sizes, dtypes, steps=options.rounds, threads=options.threads
    )
    return rows
