"""Chapter 02's experiments: the plain and the fast scalar GPT side by side, and a full run.

graph_size(root)            nodes and edges of the graph behind a loss
STEP_VARIANTS               (implementation, pause the collector?) pairs compared
side_by_side(docs, ...)     one model per variant, trained in step, one row each
backward_passes(...)        the two passes of backward(), timed apart, per edge
microgpt_reference_start    microgpt.py's own first draws, to check start_run against
training_curve(docs, ...)   the fast implementation's whole run: losses, speed, samples
sample_recompute(...)       sampling with no KV cache: the baseline the cache is measured by
kv_cache_rows, sampling_rows    cached vs recomputed: per position, and per name
check_softmax_fused, check_rmsnorm_gain, check_complete   the exercises' checkers
suite_scalar_gpt(options)   python -m microgpt_lib.bench scalar-gpt
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import sys
from dataclasses import dataclass, field, fields
from operator import mul
from typing import Any, Callable, Sequence

from . import bench, optim
from .autograd import Value, backpropagate, topological_order
from .config import GPTConfig, TrainConfig
from .data import CharTokenizer, load_names
from .scalar_gpt import (
    FAST,
    Ops,
    ScalarGPT,
    StepStats,
    Vector,
    check_sampling,
    check_tokenizer,
    document_loss,
    get_ops,
    gpt,
    make_optimizer,
    new_cache,
    next_token,
    rmsnorm,
    sample,
    softmax,
    softmax_floats,
    start_run,
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
    opt: optim.ValueAdam
    steps: list[StepStats] = field(default_factory=list)
    gc: bench.GCMeter = field(default_factory=bench.GCMeter)  # summed over the steps

    def step(self, tokens: list[int], lr: float) -> None:
        with self.gc:  # a meter counts on across the blocks it is entered for
            self.steps.append(
                train_step(self.model, self.opt, tokens, lr, self.impl, self.paused)
            )


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
    first, order, _ = start_run(docs, config, seed)
    runs = []
    for impl, paused in variants:  # every variant starts from the same weights
        model = ScalarGPT.from_weights(config, first.weights())
        runs.append(_Run(impl, paused, model, make_optimizer(model, recipe)))
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


def backward_passes(
    model: ScalarGPT, tokens: Sequence[int], ops: Ops | str = FAST, repeats: int = 5
) -> dict[str, Any]:
    """backward()'s two passes over one document's graph, timed apart (medians, GC paused).

    The topological sort visits every edge once (is the child done yet?), the chain rule
    visits every edge once more (child.grad += local * grad): so each pass's time per edge is
    the interpreter's price for one visit of one edge.
    """
    ops = get_ops(ops)
    twin = ScalarGPT.from_weights(model.config, model.weights())  # its grads fill up
    with bench.paused_gc():
        loss = document_loss(twin, tokens, ops)
        order = topological_order(loss)
        edges = sum(len(v._children) for v in order)
        sort = bench.measure(lambda: topological_order(loss), repeats=repeats)
        chain = bench.measure(lambda: backpropagate(order), repeats=repeats)
    return {
        "impl": ops.name,
        "nodes": len(order),
        "edges": edges,
        "sort_ms": 1e3 * sort.median_s,
        "chain_ms": 1e3 * chain.median_s,
        "sort_ns_per_edge": 1e9 * sort.median_s / edges,
        "chain_ns_per_edge": 1e9 * chain.median_s / edges,
    }


def microgpt_reference_start(
    docs: Sequence[str], config: GPTConfig, seed: int = 42
) -> tuple[list[str], dict[str, list[list[float]]], random.Random]:
    """microgpt.py's first draws, written its way, to check ``start_run`` against.

    Its lines are ``random.seed(42)``, ``random.shuffle(docs)``, then ``matrix(nout, nin)``
    (one ``random.gauss(0, 0.08)`` per entry) for wte, wpe, lm_head and each layer's six
    matrices, into a dict. Here the module-level stream is a private ``random.Random`` (same
    generator, same numbers) so that checking does not reseed the caller's ``random``.
    Returns (documents in training order, the weights by microgpt's names, the stream).
    """
    rng = random.Random(seed)
    docs = list(docs)
    rng.shuffle(docs)
    std, d, vocab = config.init_std, config.n_embd, config.vocab_size

    def matrix(nout: int, nin: int) -> list[list[float]]:
        return [[rng.gauss(0, std) for _ in range(nin)] for _ in range(nout)]

    state_dict = {
        "wte": matrix(vocab, d),
        "wpe": matrix(config.block_size, d),
        "lm_head": matrix(vocab, d),
    }
    for i in range(config.n_layer):
        state_dict[f"layer{i}.attn_wq"] = matrix(d, d)
        state_dict[f"layer{i}.attn_wk"] = matrix(d, d)
        state_dict[f"layer{i}.attn_wv"] = matrix(d, d)
        state_dict[f"layer{i}.attn_wo"] = matrix(d, d)
        state_dict[f"layer{i}.mlp_fc1"] = matrix(4 * d, d)
        state_dict[f"layer{i}.mlp_fc2"] = matrix(d, 4 * d)
    return docs, state_dict, rng


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
    config = GPTConfig(vocab_size=tokenizer.vocab_size)
    model, order, rng = start_run(docs, config, recipe.seed)
    log = train(model, order, tokenizer, recipe, FAST, progress=progress)
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
        "samples": sample(model, tokenizer, samples, temperature, rng),
    }


# --------------------------------------------------------------------------------------------
# inference without the KV cache: the baseline sample() is measured against


def logits_recomputed(
    model: ScalarGPT, tokens: Sequence[int], ops: Ops | str = FAST
) -> Vector:
    """The logits after the last of ``tokens``, from nothing: a fresh cache, so every earlier
    position's keys and values are computed again (with the same numbers: same inputs)."""
    ops = get_ops(ops)
    keys, values = new_cache(model.config)
    for pos, token in enumerate(tokens):
        logits = gpt(model, token, pos, keys, values, ops)
    return logits


def sample_recompute(
    model: ScalarGPT,
    tokenizer: CharTokenizer,
    count: int = 20,
    temperature: float = 0.5,
    seed: int | random.Random = 42,
) -> list[str]:
    """``sample`` with no KV cache kept between tokens: token t reruns positions 0..t.

    Same draws from the same generator, so the same names; only the work differs.
    """
    check_sampling(count, temperature)
    check_tokenizer(model, tokenizer)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    names = []
    with bench.paused_gc():
        for _ in range(count):
            tokens = [tokenizer.bos]
            for _ in range(model.config.block_size):
                token = next_token(logits_recomputed(model, tokens), temperature, rng)
                if token == tokenizer.bos:
                    break
                tokens.append(token)
            names.append(tokenizer.decode(tokens))
    return names


def kv_cache_rows(
    model: ScalarGPT, tokens: Sequence[int], repeats: int = 7
) -> list[dict[str, Any]]:
    """The cost of the token at each position t of ``tokens``, with and without the cache.

    cached: one position's forward pass, its cache already holding positions 0..t-1;
    recompute: positions 0..t from nothing (``logits_recomputed``). Medians, GC paused as
    sampling has it; every case is timed once per round (``bench.measure_interleaved``), so a
    burst of load on the machine hits all positions alike instead of a few in a row.
    """
    cfg = model.config
    if not 1 <= len(tokens) <= cfg.block_size:
        raise ValueError(f"need 1 to {cfg.block_size} tokens, got {len(tokens)}")
    full_keys, full_values = new_cache(cfg)
    cases: dict[str, Callable[[], Vector]] = {}
    for t, token in enumerate(tokens):
        gpt(model, token, t, full_keys, full_values)

        def cached(t: int = t) -> Vector:
            keys = [k[:t] for k in full_keys]  # the cache as it stood before position t
            values = [v[:t] for v in full_values]
            return gpt(model, tokens[t], t, keys, values)

        def recompute(t: int = t) -> Vector:
            return logits_recomputed(model, tokens[: t + 1])

        cases[f"cached {t}"], cases[f"recompute {t}"] = cached, recompute
    with bench.paused_gc():
        timing = bench.measure_interleaved(cases, repeats=repeats)
    rows = []
    for t in range(len(tokens)):
        cached_s = timing[f"cached {t}"].median_s
        recompute_s = timing[f"recompute {t}"].median_s
        rows.append(
            {
                "position": t,
                "cached_ms": 1e3 * cached_s,
                "recompute_ms": 1e3 * recompute_s,
                "ratio": recompute_s / cached_s,
            }
        )
    return rows


def sampling_rows(
    model: ScalarGPT,
    tokenizer: CharTokenizer,
    count: int = 20,
    temperature: float = 0.5,
    seed: int = 42,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """``count`` names drawn with the KV cache (``sample``) and without (``sample_recompute``):
    one row each with ms per name, tokens per second, the positions the model ran, and
    whether the names are the same.

    A token is one draw at a new position, the final BOS draw included: a name of n tokens
    runs n positions with the cache, 1 + 2 + ... + n = n(n+1)/2 without.
    """
    samplers = {"KV cache": sample, "recompute": sample_recompute}
    names = {
        k: fn(model, tokenizer, count, temperature, seed) for k, fn in samplers.items()
    }
    lengths = [min(len(n) + 1, model.config.block_size) for n in names["KV cache"]]
    positions = {
        "KV cache": sum(lengths),
        "recompute": sum(n * (n + 1) // 2 for n in lengths),
    }
    timing = bench.measure_interleaved(
        {
            k: (lambda fn=fn: fn(model, tokenizer, count, temperature, seed))
            for k, fn in samplers.items()
        },
        repeats=repeats,
    )
    return [
        {
            "sampler": k,
            "names": count,
            "tokens": sum(lengths),
            "positions": positions[k],
            "ms_per_name": 1e3 * timing[k].median_s / count,
            "tokens_per_s": sum(lengths) / timing[k].median_s,
            "same_names": names[k] == names["KV cache"],
        }
        for k in samplers
    ]


# --------------------------------------------------------------------------------------------
# exercises: each checker takes the reader's function; the reference solutions live here too


def _new_nodes(outputs: Sequence[Value], inputs: Sequence[Value]) -> int:
    """How many nodes the computation added between ``inputs`` and ``outputs``."""
    seen = {id(n): n for o in outputs for n in topological_order(o)}
    given = {id(v) for v in inputs}
    return sum(1 for i, n in seen.items() if i not in given and n._children)


def _weighted_grads(
    block: Callable[[list[Value]], list[Value]], data: list[float], weights: list[float]
) -> tuple[list[float], list[float]]:
    """(outputs, d(sum_i weights_i * out_i)/d(inputs)): a random weighting of the outputs
    makes one scalar whose gradient tests every output's local gradients at once."""
    xs = [Value(x) for x in data]
    outs = block(xs)
    loss = sum((w * o for w, o in zip(weights, outs)), Value(0.0))
    loss.backward()
    return [o.data for o in outs], [x.grad for x in xs]


def _close(a: Sequence[float], b: Sequence[float], tol: float = 1e-10) -> int | None:
    """The first index where a and b differ by more than tol (relative to 1), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if not abs(x - y) <= tol * max(1.0, abs(y)):
            return i
    return None


def reference_softmax_fused(logits: Vector) -> Vector:
    """softmax as n nodes, each with all n logits as children: dp_i/dz_j = p_i ([i==j] - p_j)."""
    p = softmax_floats([v.data for v in logits])
    zs = tuple(logits)
    return [
        Value(pi, zs, tuple(pi * ((i == j) - pj) for j, pj in enumerate(p)))
        for i, pi in enumerate(p)
    ]


def check_softmax_fused(softmax_fused: Callable[[Vector], Vector]) -> str:
    """Exercise: softmax as fused nodes. Compared with the plain ``softmax`` (values and
    gradients, 1e-10) on random logits, and it must add only one node per output."""
    rng = random.Random(0)
    for trial in range(20):
        n = rng.randint(1, 8)
        data = [rng.uniform(-3, 3) for _ in range(n)]
        weights = [rng.uniform(-1, 1) for _ in range(n)]
        xs = [Value(x) for x in data]
        outs = softmax_fused(xs)
        assert isinstance(outs, list) and len(outs) == n, (
            f"softmax_fused should return a list of {n} Values for {n} logits"
        )
        nodes = _new_nodes(outs, xs)
        assert nodes <= n, (
            f"{n} logits built {nodes} new nodes: a fused softmax is one node per output, "
            f"whose children are the logits themselves"
        )
        got_out, got_grad = _weighted_grads(softmax_fused, data, weights)
        want_out, want_grad = _weighted_grads(softmax, data, weights)
        bad = _close(got_out, want_out)
        assert bad is None, (
            f"output {bad} is {got_out[bad]:.6g}, softmax gives {want_out[bad]:.6g} "
            f"(logits {[round(x, 3) for x in data]})"
        )
        bad = _close(got_grad, want_grad)
        assert bad is None, (
            f"the gradient reaching logit {bad} is {got_grad[bad]:.6g}, the plain softmax "
            f"gives {want_grad[bad]:.6g}: check d p_i / d z_j for i != j as well as i == j"
        )
    return "check_softmax_fused: values and gradients match the plain softmax (20 cases)"


def reference_rmsnorm_gain(x: Vector, gain: Vector, eps: float) -> Vector:
    """g_j * x_j * s with s = (mean(x^2) + eps)^-1/2: one ``scale`` node, then one node per
    element with children (x_j, scale, g_j) and local gradients (g_j s, g_j x_j, x_j s)."""
    xd = [v.data for v in x]
    n = len(xd)
    s = (sum(map(mul, xd, xd)) / n + eps) ** -0.5
    c = -s * s * s / n
    scale = Value(s, tuple(x), tuple([c * xj for xj in xd]))
    return [
        Value(g.data * xj * s, (v, scale, g), (g.data * s, g.data * xj, xj * s))
        for v, g, xj in zip(x, gain, xd)
    ]


def check_rmsnorm_gain(rmsnorm_gain: Callable[[Vector, Vector, float], Vector]) -> str:
    """Exercise: RMSNorm with a learned gain, fused. Compared with the plain blocks
    (``rmsnorm`` then a product by the gain): values, and gradients for x and for the gain."""
    rng = random.Random(1)
    eps = 1e-5

    def plain(v: list[Value], n: int) -> list[Value]:
        return [g * y for g, y in zip(v[n:], rmsnorm(v[:n], eps))]

    for trial in range(20):
        n = rng.randint(1, 8)
        x = [rng.uniform(-2, 2) for _ in range(n)]
        g = [rng.uniform(0.5, 1.5) for _ in range(n)]  # never 1: a missing gain shows
        weights = [rng.uniform(-1, 1) for _ in range(n)]
        xs, gs = [Value(v) for v in x], [Value(v) for v in g]
        outs = rmsnorm_gain(xs, gs, eps)
        assert isinstance(outs, list) and len(outs) == n, (
            f"rmsnorm_gain should return a list of {n} Values for {n} inputs"
        )
        nodes = _new_nodes(outs, xs + gs)
        assert nodes <= n + 1, (
            f"{n} inputs built {nodes} new nodes: fused, it is one scale node and one node "
            f"per output ({n + 1} in all)"
        )
        got_out, got_grad = _weighted_grads(
            lambda v, n=n: rmsnorm_gain(v[:n], v[n:], eps), x + g, weights
        )
        want_out, want_grad = _weighted_grads(lambda v, n=n: plain(v, n), x + g, weights)
        bad = _close(got_out, want_out)
        assert bad is None, (
            f"output {bad} is {got_out[bad]:.6g}, the plain blocks give {want_out[bad]:.6g}"
        )
        bad = _close(got_grad, want_grad)
        assert bad is None, (
            f"the gradient reaching {'x' if bad < n else 'gain'}[{bad % n}] is "
            f"{got_grad[bad]:.6g}, the plain blocks give {want_grad[bad]:.6g}"
        )
    return "check_rmsnorm_gain: values and gradients (x and gain) match the plain blocks"


def reference_complete(
    model: ScalarGPT,
    tokenizer: CharTokenizer,
    prefix: str,
    count: int = 10,
    temperature: float = 0.5,
    seed: int = 42,
) -> list[str]:
    """``count`` names that start with ``prefix``: the prefix goes through the model once,
    filling the cache (prefill), then one position per new token (decode)."""
    cfg = model.config
    prompt = [tokenizer.bos, *tokenizer.encode(prefix)]
    if len(prompt) > cfg.block_size:
        raise ValueError(f"the prefix is longer than the context ({cfg.block_size - 1})")
    rng = random.Random(seed)
    names = []
    for _ in range(count):
        keys, values = new_cache(cfg)
        for pos, token in enumerate(prompt[:-1]):  # prefill; these logits are not needed
            gpt(model, token, pos, keys, values)
        token, out = prompt[-1], prompt[1:]
        for pos in range(len(prompt) - 1, cfg.block_size):
            token = next_token(gpt(model, token, pos, keys, values), temperature, rng)
            if token == tokenizer.bos:
                break
            out.append(token)
        names.append(tokenizer.decode(out))
    return names


class _CountingRows(list):
    """A list that counts reads by index: the model reads one wte row per position it runs."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        self.reads += 1
        return super().__getitem__(index)


def check_complete(
    complete: Callable[..., list[str]], model: ScalarGPT, tokenizer: CharTokenizer
) -> str:
    """Exercise: complete a prefix with the KV cache. ``complete(model, tokenizer, prefix,
    count, temperature, seed)`` must give ``reference_complete``'s names (same draws) and run
    the model once per position: counted by the token-embedding rows it reads."""
    check_tokenizer(model, tokenizer)
    for prefix, seed in (("ma", 1), ("j", 2), ("chris", 3)):
        counting = _CountingRows(model.params.wte)
        twin = ScalarGPT(model.config, dataclasses.replace(model.params, wte=counting))
        got = complete(twin, tokenizer, prefix, 8, 0.8, seed)
        want = reference_complete(model, tokenizer, prefix, 8, 0.8, seed)
        assert isinstance(got, list) and len(got) == len(want), (
            f"complete(..., {prefix!r}, count=8, ...) should return a list of 8 names"
        )
        bad = [n for n in got if not (isinstance(n, str) and n.startswith(prefix))]
        assert not bad, f"every name should start with {prefix!r}, got {bad[0]!r}"
        assert got == want, (
            f"prefix {prefix!r}, seed {seed}: got {got}, expected {want}. Draw each token "
            f"with next_token(logits, temperature, rng) from rng = random.Random(seed), "
            f"one generator for all the names"
        )
        needed = sum(min(len(n) + 1, model.config.block_size) for n in want)
        assert counting.reads <= needed, (
            f"prefix {prefix!r}: the model ran {counting.reads} positions, {needed} suffice; "
            f"is the prefix, or every earlier token, computed again for each new token?"
        )
    return "check_complete: same names as the reference, one model run per position"


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
