"""A GPT made of scalars: Karpathy's microgpt on ``autograd.Value``, then as fast as Python gets.

    ScalarGPT                    the weights as Values, in a GPTParams container
    gpt(model, token, pos, keys, values, ops)   one position's forward, with a KV cache
    document_loss(model, tokens, ops)           mean next-token cross-entropy over one document
    PLAIN, FAST (Ops)            the same model built from two kinds of graph nodes:
        plain: linear, rmsnorm, softmax, attention_head, cross_entropy, mean
               binary-op nodes, as micrograd builds them (~60k nodes for a typical name)
        fast:  linear_fused, rmsnorm_fused, attention_head_fused, cross_entropy_fused, mean_fused
               one node per dot product / softmax output / loss, with hand-derived local
               gradients stored in the forward pass (~25x fewer new nodes), and no collector
    start_run(docs, config, seed)   model, training order and generator, in microgpt's order
    make_optimizer(model)        microgpt's Adam on the Values (chapter 08's optim.ValueAdam)
    train_step, train            one timed step, the loop (tqdm)
    next_token, sample           one draw at a temperature; names, with the KV cache

Command line:  python -m microgpt_lib.scalar_gpt [--steps N] [--data FILE] [--seed S]
               [--impl fast|plain] [--samples K] [--temperature T]

Given Karpathy's names.txt (``--data names.txt``) and seed 42 the command prints the same
per-step losses as his microgpt.py: one random stream, drawn in the same order (start_run).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from operator import mul
from typing import Any, Callable, Sequence

from . import optim
from .autograd import Value
from .bench import paused_gc, run_command_line
from .config import GPTConfig, GPTParams, TrainConfig, init_weights, param_shapes
from .data import CharTokenizer, load_documents, load_names, shuffled

Vector = list[Value]
Matrix = list[list[Value]]


# --------------------------------------------------------------------------------------------
# the model's weights


@dataclass
class ScalarGPT:
    """A GPT whose every weight is one ``Value``; ``parameters()`` lists them in one fixed order."""

    config: GPTConfig
    params: GPTParams[Matrix]
    _flat: list[Value] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._flat = [
            p
            for _, matrix in self.params.named_parameters()
            for row in matrix
            for p in row
        ]

    @classmethod
    def from_weights(
        cls, config: GPTConfig, weights: GPTParams[list[list[float]]]
    ) -> ScalarGPT:
        """Wrap plain floats (e.g. ``init_weights(config, seed)``) in fresh Values."""
        if len(weights.layers) != config.n_layer:
            raise ValueError(
                f"weights have {len(weights.layers)} layers, the config says {config.n_layer}"
            )
        for (name, matrix), (_, (rows, cols)) in zip(
            weights.named_parameters(), param_shapes(config).named_parameters()
        ):
            if len(matrix) != rows or any(len(row) != cols for row in matrix):
                raise ValueError(
                    f"weights[{name!r}] should be {rows} x {cols} for this config"
                )
        return cls(
            config, weights.map(lambda m: [[Value(float(w)) for w in row] for row in m])
        )

    @classmethod
    def init(cls, config: GPTConfig, seed: int = 42) -> ScalarGPT:
        """Weights ~ N(0, config.init_std) from a fresh ``random.Random(seed)``: the same
        numbers every run. (A training run draws them after its shuffle: ``start_run``.)"""
        return cls.from_weights(config, init_weights(config, seed))

    def parameters(self) -> list[Value]:
        return self._flat

    def weights(self) -> GPTParams[list[list[float]]]:
        """A snapshot of the weights as plain floats."""
        return self.params.map(lambda m: [[p.data for p in row] for row in m])

    def gradients(self) -> list[float]:
        return [p.grad for p in self._flat]


# --------------------------------------------------------------------------------------------
# plain: microgpt's building blocks, one binary-op Value node per + and *


def linear(x: Vector, w: Matrix) -> Vector:
    """y = W x: one dot product per row, built from Value * and + (2 new nodes per term)."""
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def softmax(logits: Vector) -> Vector:
    """exp(x - max) / sum: subtracting the max keeps exp from overflowing (and changes nothing)."""
    max_val = max(v.data for v in logits)
    exps = [(v - max_val).exp() for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x: Vector, eps: float) -> Vector:
    """x / sqrt(mean(x^2) + eps): unit root-mean-square, no learned gain."""
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + eps) ** -0.5
    return [xi * scale for xi in x]


def attention_head(q: Vector, keys: list[Vector], values: list[Vector]) -> Vector:
    """One head at one position: softmax(q . k_t / sqrt(d)) over the cached positions, then
    the weighted sum of their values. The cache holds only positions <= now: that is the mask."""
    d = len(q)
    logits = [sum(q[j] * k[j] for j in range(d)) / d**0.5 for k in keys]
    weights = softmax(logits)
    return [sum(weights[t] * values[t][j] for t in range(len(values))) for j in range(d)]


def cross_entropy(logits: Vector, target: int) -> Value:
    """-log p(target): the surprise of the right answer."""
    return -softmax(logits)[target].log()


def mean(xs: Vector) -> Value:
    return (1 / len(xs)) * sum(xs)


# --------------------------------------------------------------------------------------------
# fast: fused nodes. Each computes its output from plain floats and stores d(output)/d(input)
# for every input as it goes, so backward is the same loop over (child, local grad) pairs as
# for a + or a *: the graph just has far fewer nodes (and the floats never become Values).


def softmax_floats(xs: Sequence[float]) -> list[float]:
    """softmax on plain floats (the fused nodes' forward pass and sampling use it)."""
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def linear_fused(x: Vector, w: Matrix) -> Vector:
    """y = W x with one node per output: children (row, x), local grads (x, row).

    d(w . x)/d(w_i) = x_i and d(w . x)/d(x_i) = w_i: the two halves of a dot product's
    gradient are each other's data.
    """
    xs = tuple(x)
    xd = [v.data for v in xs]
    out = []
    for row in w:
        wd = [p.data for p in row]
        out.append(Value(sum(map(mul, wd, xd)), (*row, *xs), (*xd, *wd)))
    return out


def rmsnorm_fused(x: Vector, eps: float) -> Vector:
    """RMSNorm as one ``scale`` node (s = (mean(x^2) + eps)^-1/2, ds/dx_j = -s^3 x_j / n) and
    one product per element: 3n edges. (Fusing all n outputs would need n^2.)"""
    xd = [v.data for v in x]
    n = len(xd)
    s = (sum(map(mul, xd, xd)) / n + eps) ** -0.5
    c = -s * s * s / n
    scale = Value(s, tuple(x), tuple([c * xj for xj in xd]))
    return [Value(xj * s, (v, scale), (s, xj)) for v, xj in zip(x, xd)]


def attention_head_fused(q: Vector, keys: list[Vector], values: list[Vector]) -> Vector:
    """One head with no node for the attention weights at all.

    score_t = q . k_t / sqrt(d) is one node (children q and k_t). The softmax weights w_t stay
    floats: output j = sum_t w_t v_tj is one node whose children are the scores and the v_tj,
    with d(out_j)/d(score_t) = w_t (v_tj - out_j) and d(out_j)/d(v_tj) = w_t.
    """
    root_d = len(q) ** 0.5
    qs = tuple(q)
    qd = [v.data for v in qs]
    d_score_d_k = [x / root_d for x in qd]
    scores = []
    for k in keys:
        kd = [v.data for v in k]
        scores.append(
            Value(
                sum(map(mul, qd, kd)) / root_d,
                (*qs, *k),
                (*[x / root_d for x in kd], *d_score_d_k),
            )
        )
    weights = softmax_floats([s.data for s in scores])
    out = []
    for j in range(len(q)):
        vj = [v[j] for v in values]
        vd = [v.data for v in vj]
        o = sum(map(mul, weights, vd))
        out.append(
            Value(
                o, (*scores, *vj), (*[w * (v - o) for w, v in zip(weights, vd)], *weights)
            )
        )
    return out


def cross_entropy_fused(logits: Vector, target: int) -> Value:
    """-log softmax(logits)[target] as one node: d(loss)/d(logit_j) = p_j - [j == target]."""
    p = softmax_floats([v.data for v in logits])
    loss = -math.log(p[target])
    p[target] -= 1.0
    return Value(loss, tuple(logits), tuple(p))


def mean_fused(xs: Vector) -> Value:
    n = len(xs)
    return Value(sum(v.data for v in xs) / n, tuple(xs), (1.0 / n,) * n)


# --------------------------------------------------------------------------------------------
# the model, written once over either set of building blocks


@dataclass(frozen=True)
class Ops:
    """The building blocks one implementation builds its graph from."""

    name: str
    linear: Callable[[Vector, Matrix], Vector]
    rmsnorm: Callable[[Vector, float], Vector]
    attention_head: Callable[[Vector, list[Vector], list[Vector]], Vector]
    cross_entropy: Callable[[Vector, int], Value]
    mean: Callable[[Vector], Value]
    # Run each step with the cyclic garbage collector off. Safe: a node refers only to its
    # children, never back, so reference counting frees the whole graph when the loss goes; the
    # collector would only walk the live graph again and again as it grows.
    pause_gc: bool


PLAIN = Ops("plain", linear, rmsnorm, attention_head, cross_entropy, mean, pause_gc=False)
FAST = Ops(
    "fast",
    linear_fused,
    rmsnorm_fused,
    attention_head_fused,
    cross_entropy_fused,
    mean_fused,
    pause_gc=True,
)
IMPLEMENTATIONS = {"plain": PLAIN, "fast": FAST}


def get_ops(impl: str | Ops) -> Ops:
    if isinstance(impl, Ops):
        return impl
    if impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"impl must be one of {', '.join(IMPLEMENTATIONS)}, got {impl!r}"
        )
    return IMPLEMENTATIONS[impl]


def gpt(
    model: ScalarGPT,
    token_id: int,
    pos_id: int,
    keys: list[list[Vector]],
    values: list[list[Vector]],
    ops: Ops = FAST,
) -> Vector:
    """The logits for the token after ``token_id`` at position ``pos_id``.

    ``keys[layer]`` / ``values[layer]`` are the KV cache: every earlier position's key and
    value vectors. This call appends its own, so attention sees positions 0..pos_id and no
    later one (the causal mask is simply that the future is not in the cache yet).
    """
    cfg, p = model.config, model.params
    hd, eps = cfg.head_dim, cfg.norm_eps
    # what the token is + where it is
    x = [t + q for t, q in zip(p.wte[token_id], p.wpe[pos_id])]
    x = ops.rmsnorm(x, eps)
    for layer, layer_keys, layer_values in zip(p.layers, keys, values):
        # 1) attention: the one place where a position looks at earlier positions
        residual = x
        x = ops.rmsnorm(x, eps)
        q = ops.linear(x, layer.attn_wq)
        layer_keys.append(ops.linear(x, layer.attn_wk))
        layer_values.append(ops.linear(x, layer.attn_wv))
        x_attn: Vector = []
        for hs in range(0, cfg.n_embd, hd):
            x_attn.extend(
                ops.attention_head(
                    q[hs : hs + hd],
                    [k[hs : hs + hd] for k in layer_keys],
                    [v[hs : hs + hd] for v in layer_values],
                )
            )
        x = ops.linear(x_attn, layer.attn_wo)
        x = [a + b for a, b in zip(x, residual)]
        # 2) MLP: 4x wider, ReLU, back down; each position on its own
        residual = x
        x = ops.rmsnorm(x, eps)
        x = [h.relu() for h in ops.linear(x, layer.mlp_fc1)]
        x = ops.linear(x, layer.mlp_fc2)
        x = [a + b for a, b in zip(x, residual)]
    return ops.linear(x, p.lm_head)


def new_cache(config: GPTConfig) -> tuple[list[list[Vector]], list[list[Vector]]]:
    """An empty KV cache: per layer, a list of key (value) vectors, one per position seen."""
    return [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]


def document_loss(
    model: ScalarGPT, tokens: Sequence[int], ops: Ops | str = FAST
) -> Value:
    """Mean cross-entropy of predicting tokens[1:] from tokens[:-1] (at most block_size of them)."""
    ops = get_ops(ops)
    cfg = model.config
    if len(tokens) < 2:
        raise ValueError(
            f"a document needs at least 2 tokens (BOS, ..., BOS), got {len(tokens)}"
        )
    bad = [t for t in tokens if not (isinstance(t, int) and 0 <= t < cfg.vocab_size)]
    if bad:
        raise ValueError(
            f"token ids must be ints in [0, {cfg.vocab_size}), got {bad[0]!r}"
        )
    n = min(cfg.block_size, len(tokens) - 1)
    keys, values = new_cache(cfg)
    losses = [
        ops.cross_entropy(
            gpt(model, tokens[pos], pos, keys, values, ops), tokens[pos + 1]
        )
        for pos in range(n)
    ]
    return ops.mean(losses)


# --------------------------------------------------------------------------------------------
# optimizer, one step, the loop


def make_optimizer(
    model: ScalarGPT, recipe: TrainConfig = TrainConfig()
) -> optim.ValueAdam:
    """microgpt's Adam (chapter 08's optim.ValueAdam) over the model's Values, with the recipe's
    betas and eps."""
    return optim.ValueAdam(
        model.parameters(), betas=(recipe.beta1, recipe.beta2), eps=recipe.eps
    )


@dataclass
class StepStats:
    """One training step: its loss and where its time went, in seconds."""

    loss: float
    forward_s: float  # building the graph up to the loss
    backward_s: float  # topological order + chain rule into every .grad
    optimizer_s: float  # Adam over every parameter (and zeroing their grads)
    free_s: float  # dropping the graph: every node is deallocated

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s + self.free_s


def train_step(
    model: ScalarGPT,
    opt: optim.ValueAdam,
    tokens: Sequence[int],
    lr: float,
    ops: Ops | str = FAST,
    pause_gc: bool | None = None,
) -> StepStats:
    """Forward, backward, Adam, free: one step on one document (``pause_gc``: the ops' default)."""
    ops = get_ops(ops)
    clock = time.perf_counter
    with paused_gc(ops.pause_gc if pause_gc is None else pause_gc):
        t0 = clock()
        loss = document_loss(model, tokens, ops)
        t1 = clock()
        loss.backward()
        t2 = clock()
        opt.step(lr)
        t3 = clock()
        value = loss.data
        # nothing else holds the graph: it is freed here, and that is part of the step
        del loss
        t4 = clock()
    return StepStats(value, t1 - t0, t2 - t1, t3 - t2, t4 - t3)


@dataclass
class TrainLog:
    """A run's steps (chapter 09's training loop keeps its own StepStats in it too)."""

    steps: list[Any]  # each with .loss and .total_s

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(s.total_s for s in self.steps)


def check_tokenizer(model: Any, tokenizer: CharTokenizer) -> None:
    """Raise if the tokenizer's ids do not fit the model's embedding and output tables (any
    model with a ``config``: chapter 09's too)."""
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens, "
            f"the model {model.config.vocab_size}"
        )


def start_run(
    docs: Sequence[str], config: GPTConfig, seed: int = 42
) -> tuple[ScalarGPT, list[str], random.Random]:
    """(model, training order, generator): a run's start, in microgpt's random-number order.

    microgpt seeds one stream and draws everything from it: first one shuffle of the
    documents, then every weight (``init_weights``' order); sampling after training goes on
    drawing from the same stream. Same documents and seed, same numbers as microgpt.py.
    """
    rng = random.Random(seed)  # microgpt: random.seed(42)
    order = shuffled(docs, rng)  # random.shuffle(docs): the stream's first draws
    model = ScalarGPT.from_weights(config, init_weights(config, rng))  # then the weights
    return model, order, rng


def train(
    model: ScalarGPT,
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    recipe: TrainConfig = TrainConfig(),
    ops: Ops | str = FAST,
    *,
    progress: bool = False,
    on_step: Callable[[int, StepStats], Any] | None = None,
) -> TrainLog:
    """microgpt's loop: step i trains on docs[i % len(docs)], the learning rate decaying to 0.

    The documents are visited in the order given: pass them shuffled (``start_run`` does).
    """
    ops = get_ops(ops)
    check_tokenizer(model, tokenizer)
    if not docs:
        raise ValueError("no documents to train on")
    from tqdm.auto import tqdm

    opt = make_optimizer(model, recipe)
    log = TrainLog([])
    bar = tqdm(
        range(recipe.steps),
        desc=f"training ({ops.name})",
        unit="step",
        disable=not progress,
    )
    for step in bar:
        tokens = tokenizer.encode_document(docs[step % len(docs)])
        stats = train_step(model, opt, tokens, recipe.lr_at(step), ops)
        log.steps.append(stats)
        if progress:
            bar.set_postfix(loss=f"{stats.loss:.4f}", refresh=False)
        if on_step is not None:
            on_step(step, stats)
    bar.close()
    return log


def check_sampling(count: int, temperature: float) -> None:
    """Raise unless count is an int >= 0 and temperature a positive number."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature > 0
    ):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")


def next_token(logits: Vector, temperature: float, rng: random.Random) -> int:
    """Draw the next token id from softmax(logits / temperature), as microgpt does.

    Temperature divides the logits: below 1 sharpens the distribution (safer, blander names),
    above 1 flattens it.
    """
    probs = softmax_floats([v.data / temperature for v in logits])
    return rng.choices(range(len(probs)), weights=probs)[0]


def sample(
    model: ScalarGPT,
    tokenizer: CharTokenizer,
    count: int = 20,
    temperature: float = 0.5,
    seed: int | random.Random = 42,
) -> list[str]:
    """Generate ``count`` documents, one token at a time, until BOS or block_size tokens.

    Each new token runs the model once, for its own position: the keys and values of the
    earlier positions wait in the KV cache. ``seed`` is an int or a generator to draw from
    (``start_run``'s, to go on as microgpt does after training). Same model and seed, same
    names.
    """
    check_sampling(count, temperature)
    check_tokenizer(model, tokenizer)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    names = []
    with paused_gc():
        for _ in range(count):
            keys, values = new_cache(model.config)
            token, out = tokenizer.bos, []
            for pos in range(model.config.block_size):
                logits = gpt(model, token, pos, keys, values, FAST)
                token = next_token(logits, temperature, rng)
                if token == tokenizer.bos:
                    break
                out.append(token)
            names.append(tokenizer.decode(out))
    return names


# --------------------------------------------------------------------------------------------
# command line


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training command line shares (chapter 09's adds its own)."""
    parser.add_argument(
        "--steps", type=int, default=TrainConfig().steps, help="training steps"
    )
    parser.add_argument(
        "--data",
        help="a text file with one document per line (default: the names dataset)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seeds the one random stream: document order, then weights, then sampling",
    )
    parser.add_argument(
        "--samples", type=int, default=20, help="documents to sample after training"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.5, help="sampling temperature (> 0)"
    )


def read_run(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[TrainConfig, list[str], CharTokenizer, GPTConfig]:
    """(recipe, documents, tokenizer, model config) from ``add_run_arguments``' options; a bad
    option or an unreadable file ends the program with ``parser.error`` naming it."""
    if args.samples < 0:
        parser.error(f"--samples must be >= 0, got {args.samples}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    try:
        recipe = TrainConfig(steps=args.steps, seed=args.seed)
        docs = load_documents(args.data) if args.data else load_names()
        tokenizer = CharTokenizer.from_documents(docs)
        config = GPTConfig(vocab_size=tokenizer.vocab_size)
    except (ValueError, TypeError, OSError) as error:
        parser.error(str(error))
    return recipe, docs, tokenizer, config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m microgpt_lib.scalar_gpt",
        description="Train microgpt (a GPT made of scalar Values) and sample from it.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--impl",
        choices=sorted(IMPLEMENTATIONS),
        default="fast",
        help="which step to run",
    )
    return parser


def main(argv: list[str] | None = None) -> TrainLog:
    parser = build_parser()
    args = parser.parse_args(argv)
    recipe, docs, tokenizer, config = read_run(parser, args)
    model, order, rng = start_run(docs, config, recipe.seed)
    print(
        f"{len(docs):,} documents | vocabulary {config.vocab_size} | "
        f"{config.num_params():,} parameters | "
        f"impl {args.impl} | {recipe.steps} steps"
    )
    interactive = sys.stderr.isatty()

    def print_step(step: int, stats: StepStats) -> None:
        print(
            f"step {step + 1:4d} / {recipe.steps} | loss {stats.loss:.4f} | "
            f"{1e3 * stats.total_s:.1f} ms",
            flush=True,
        )

    log = train(
        model,
        order,
        tokenizer,
        recipe,
        args.impl,
        progress=interactive,
        on_step=None if interactive else print_step,
    )
    if interactive:  # the bar showed the losses as they came; leave the first and last
        print(
            f"loss: {log.losses[0]:.4f} at step 1, {log.losses[-1]:.4f} at step {recipe.steps}"
        )
    print(f"median {log.median_ms:.1f} ms per step ({args.impl})")
    for i, name in enumerate(
        sample(model, tokenizer, args.samples, args.temperature, rng), start=1
    ):
        print(f"sample {i:2d}: {name}")
    return log


if __name__ == "__main__":
    run_command_line(main)
