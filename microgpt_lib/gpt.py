"""A GPT made of matrices: microgpt on ``tensor.Tensor``, batched over documents.

    MatrixGPT                    the weights as Tensors in a GPTParams (float64 or float32)
    make_batch(docs, ...)        (B, T) token ids, targets and a loss mask, padded on the right
    forward(model, idx)          logits (B, T, vocab): every position of every document at once
    loss(model, batch)           mean next-token cross-entropy over the real (unmasked) tokens
    start_run(docs, config, seed, dtype)   model, training order, generator: microgpt's order
    make_optimizer(model, recipe)          chapter 08's Adam on a flat buffer, microgpt's betas
    train_step, train            one timed step, the loop (tqdm)
    sample(model, tokenizer, ...)          names, drawn as chapter 02 draws them
    fused_loss_and_grads, fused_step       the step by hand over whole arrays: no graph
    compiled_loss_and_grads, compiled_step the step as loops compiled by numba (batch 1)
    IMPLEMENTATIONS              "tensor", "fused", "compiled": the steps, by name

Command line:  python -m microgpt_lib.gpt [--steps N] [--data FILE] [--seed S] [--batch B]
               [--dtype float64|float32] [--impl tensor|fused|compiled] [--samples K]
               [--temperature T]

The model is chapter 02's, line for line, with one change of atom: a row of positions is one
array, so a linear layer is one matrix product for every position of every document, and the
causal mask replaces the KV cache (a position's scores for later positions are set to -inf).
Documents shorter than the batch's longest are padded at the end; with the causal mask a real
position never sees the padding, and the loss mask gives the padded positions weight 0, so
padding changes nothing for the real tokens.

The optimizer is chapter 08's ``optim.Adam`` with microgpt's betas (0.85, 0.99) and eps, and the
linear decay ``optim.linear_decay_lr``. Its arithmetic is torch's, m_hat / (sqrt(v) /
sqrt(1 - beta2^t) + eps), where microgpt writes m_hat / (sqrt(v_hat) + eps): the same number
computed in another order, so loss curves agree with chapter 02's to rounding, not bit for bit
(the tests hold them to 1e-9).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numba
import numpy as np

from . import optim
from .bench import check_dtype, run_command_line
from .config import GPTConfig, GPTParams, TrainConfig, init_weights, param_shapes
from .data import CharTokenizer, shuffled
from .scalar_gpt import (
    TrainLog,
    add_run_arguments,
    check_sampling,
    check_tokenizer,
    read_run,
    softmax_floats,
)
from .tensor import Tensor, cross_entropy, linear, no_grad, rmsnorm, softmax

# --------------------------------------------------------------------------------------------
# the model's weights


@dataclass
class MatrixGPT:
    """A GPT whose every weight matrix is one ``Tensor`` (rows = outputs, as ``y = W x``)."""

    config: GPTConfig
    params: GPTParams[Tensor]
    # the flat (data, grad) buffers the parameters are views of, once flat_buffers found them
    flat: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_weights(
        cls, config: GPTConfig, weights: GPTParams[Any], dtype: str = "float64"
    ) -> MatrixGPT:
        """Copy matrices (lists of floats, e.g. ``init_weights``, or arrays) into Tensors."""
        check_dtype(dtype)
        if len(weights.layers) != config.n_layer:
            raise ValueError(
                f"weights have {len(weights.layers)} layers, the config says {config.n_layer}"
            )
        for (name, matrix), (_, shape) in zip(
            weights.named_parameters(), param_shapes(config).named_parameters()
        ):
            if np.shape(matrix) != shape:
                raise ValueError(
                    f"weights[{name!r}] is {np.shape(matrix)}, this config needs {shape}"
                )
        return cls(config, weights.map(lambda m: Tensor(np.array(m, dtype=dtype))))

    @classmethod
    def init(cls, config: GPTConfig, seed: int = 42, dtype: str = "float64") -> MatrixGPT:
        """``init_weights(config, seed)``: the same numbers as chapter 02's ScalarGPT.init."""
        return cls.from_weights(config, init_weights(config, seed), dtype)

    @property
    def dtype(self) -> np.dtype:
        return self.params.wte.dtype

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return list(self.params.named_parameters())

    def parameters(self) -> list[Tensor]:
        return [p for _, p in self.params.named_parameters()]

    def weights(self) -> GPTParams[np.ndarray]:
        """A snapshot of the weights as arrays (copies)."""
        return self.params.map(lambda t: t.data.copy())

    def gradients(self) -> GPTParams[np.ndarray]:
        return self.params.map(lambda t: t.grad.copy())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0.0)


# --------------------------------------------------------------------------------------------
# batches of documents


@dataclass(frozen=True)
class Batch:
    """B documents as (B, T) arrays: the input ids, the ids to predict, and a loss mask
    (1.0 at a real position, 0.0 at padding). T is the longest document's positions."""

    idx: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    @property
    def tokens(self) -> int:
        """Real positions: what the loss averages over (and what tokens/s counts)."""
        return int(self.mask.sum())


def make_batch(
    documents: Sequence[Sequence[int]], config: GPTConfig, pad: int = 0
) -> Batch:
    """Token lists ([BOS, ..., BOS]) as one padded batch.

    As microgpt does, a document trains on n = min(block_size, len - 1) positions: longer ones
    are cut at block_size. ``pad`` is the id written into padding (any valid id: those
    positions carry no loss, and no real position attends to them).
    """
    if not documents:
        raise ValueError("make_batch: no documents")
    vocab = config.vocab_size
    if not (isinstance(pad, int) and 0 <= pad < vocab):
        raise ValueError(f"pad must be a token id in [0, {vocab}), got {pad!r}")
    for i, doc in enumerate(documents):
        if len(doc) < 2:
            raise ValueError(
                f"document {i} has {len(doc)} tokens: it needs at least 2 (BOS, ..., BOS)"
            )
        bad = [
            t for t in doc if not (isinstance(t, (int, np.integer)) and 0 <= t < vocab)
        ]
        if bad:
            raise ValueError(
                f"document {i}: token ids must be ints in [0, {vocab}), got {bad[0]!r}"
            )
    lengths = [min(config.block_size, len(doc) - 1) for doc in documents]
    shape = (len(documents), max(lengths))
    idx, targets = np.full(shape, pad, np.int64), np.full(shape, pad, np.int64)
    mask = np.zeros(shape)
    for row, (doc, n) in enumerate(zip(documents, lengths)):
        idx[row, :n] = doc[:n]
        targets[row, :n] = doc[1 : n + 1]
        mask[row, :n] = 1.0
    return Batch(idx, targets, mask)


# --------------------------------------------------------------------------------------------
# the model


_causal_masks: dict[int, np.ndarray] = {}


def causal_mask(t: int) -> np.ndarray:
    """(t, t) bools, True where query position i may look at key position j (j <= i)."""
    if t not in _causal_masks:
        _causal_masks[t] = np.tril(np.ones((t, t), dtype=bool))
    return _causal_masks[t]


def forward(model: MatrixGPT, idx: np.ndarray) -> Tensor:
    """The logits (B, T, vocab) for the token after each position of each row of ``idx``.

    Chapter 02's ``gpt()``, for all positions at once: each ``linear`` is one matrix product
    over B * T positions, and attention is two batched products per layer, (B, heads, T, T).
    """
    cfg, p = model.config, model.params
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ValueError(
            f"forward: idx must be a (B, T) integer array, got {idx.dtype}{idx.shape}"
        )
    b, t = idx.shape
    if t > cfg.block_size:
        raise ValueError(
            f"forward: {t} positions, but the model has block_size {cfg.block_size} "
            "(position embeddings for 0..block_size-1 only)"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= cfg.vocab_size):
        bad = idx[(idx < 0) | (idx >= cfg.vocab_size)][0]
        raise ValueError(f"forward: token id {bad} is not in [0, {cfg.vocab_size})")
    h, hd, c, eps = cfg.n_head, cfg.head_dim, cfg.n_embd, cfg.norm_eps
    mask, scale = causal_mask(t), 1.0 / math.sqrt(hd)
    # what the token is + where it is
    x = p.wte[idx] + p.wpe[:t]
    x = rmsnorm(x, eps)
    for layer in p.layers:
        # 1) attention: the one place where a position looks at earlier positions
        residual = x
        x = rmsnorm(x, eps)
        q = linear(x, layer.attn_wq).reshape(b, t, h, hd).transpose(0, 2, 1, 3)
        k = linear(x, layer.attn_wk).reshape(b, t, h, hd).transpose(0, 2, 3, 1)
        v = linear(x, layer.attn_wv).reshape(b, t, h, hd).transpose(0, 2, 1, 3)
        weights = softmax((q @ k) * scale, mask)  # (B, heads, T, T)
        x = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
        x = linear(x, layer.attn_wo) + residual
        # 2) MLP: 4x wider, ReLU, back down; each position on its own
        residual = x
        x = rmsnorm(x, eps)
        x = linear(linear(x, layer.mlp_fc1).relu(), layer.mlp_fc2) + residual
    return linear(x, p.lm_head)


def loss(model: MatrixGPT, batch: Batch) -> Tensor:
    """Mean cross-entropy over the batch's real positions (one document: microgpt's loss)."""
    weights = batch.mask / batch.mask.sum()
    return cross_entropy(forward(model, batch.idx), batch.targets, weights)


# --------------------------------------------------------------------------------------------
# training


def start_run(
    docs: Sequence[str], config: GPTConfig, seed: int = 42, dtype: str = "float64"
) -> tuple[MatrixGPT, list[str], random.Random]:
    """(model, training order, generator) in microgpt's random-number order: one stream, the
    documents shuffled first, then the weights; chapter 02's ``start_run`` draws the same."""
    rng = random.Random(seed)
    order = shuffled(docs, rng)
    return MatrixGPT.from_weights(config, init_weights(config, rng), dtype), order, rng


def make_optimizer(
    model: MatrixGPT, recipe: TrainConfig = TrainConfig(), impl: str = "auto"
) -> optim.Adam:
    """Chapter 08's Adam with microgpt's settings, its parameters in one flat buffer (so the
    update is one fused pass). The gradients are written in place into that buffer."""
    optim.flatten_(model.named_parameters())
    return optim.Adam(
        model.named_parameters(),
        impl=impl,
        lr=recipe.lr,
        betas=(recipe.beta1, recipe.beta2),
        eps=recipe.eps,
    )


@dataclass
class StepStats:
    """One training step: its loss and where its time went, in seconds."""

    loss: float
    forward_s: float  # building the graph up to the loss (numpy does the arithmetic here)
    backward_s: float  # topological order + every gradient function
    optimizer_s: float  # Adam over the flat buffer, and zeroing the gradients
    tokens: int  # real positions trained on

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s


def train_step(
    model: MatrixGPT, opt: optim.Optimizer, batch: Batch, lr: float
) -> StepStats:
    """Forward, backward, Adam, zero the gradients: one step on one batch."""
    clock = time.perf_counter
    t0 = clock()
    out = loss(model, batch)
    t1 = clock()
    out.backward()
    t2 = clock()
    optim.set_lr(opt, lr)
    opt.step()
    opt.zero_grad()
    t3 = clock()
    return StepStats(out.item(), t1 - t0, t2 - t1, t3 - t2, batch.tokens)


def batches(
    order: Sequence[str], tokenizer: CharTokenizer, config: GPTConfig, batch_size: int
):
    """Step i's batch: documents i*B .. i*B + B - 1 of the order, wrapping around (at B = 1,
    microgpt's docs[i % len(docs)])."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an int >= 1, got {batch_size!r}")
    step = 0
    while True:
        start = step * batch_size
        docs = [order[(start + j) % len(order)] for j in range(batch_size)]
        yield make_batch([tokenizer.encode_document(d) for d in docs], config)
        step += 1


def train(
    model: MatrixGPT,
    docs: Sequence[str],
    tokenizer: CharTokenizer,
    recipe: TrainConfig = TrainConfig(),
    *,
    batch_size: int = 1,
    step_fn: Callable[..., StepStats] | None = None,
    progress: bool = False,
    on_step: Callable[[int, StepStats], Any] | None = None,
) -> TrainLog:
    """microgpt's loop on batches: Adam, the learning rate decaying linearly to 0.

    ``step_fn(model, opt, batch, lr)`` is the step to run (``train_step`` by default)."""
    check_tokenizer(model, tokenizer)
    if not docs:
        raise ValueError("no documents to train on")
    from tqdm.auto import tqdm

    step_fn = step_fn or train_step
    opt = make_optimizer(model, recipe)
    log = TrainLog([])
    source = batches(docs, tokenizer, model.config, batch_size)
    bar = tqdm(range(recipe.steps), desc="training", unit="step", disable=not progress)
    for step in bar:
        stats = step_fn(model, opt, next(source), recipe.lr_at(step))
        log.steps.append(stats)
        if progress:
            bar.set_postfix(loss=f"{stats.loss:.4f}", refresh=False)
        if on_step is not None:
            on_step(step, stats)
    bar.close()
    return log


# --------------------------------------------------------------------------------------------
# sampling


def next_token(logits: np.ndarray, temperature: float, rng: random.Random) -> int:
    """Chapter 02's draw: softmax(logits / temperature), then ``rng.choices``."""
    probs = softmax_floats([float(v) / temperature for v in logits])
    return rng.choices(range(len(probs)), weights=probs)[0]


def sample(
    model: MatrixGPT,
    tokenizer: CharTokenizer,
    count: int = 20,
    temperature: float = 0.5,
    seed: int | random.Random = 42,
) -> list[str]:
    """``count`` names, one token at a time until BOS or block_size tokens, as chapter 02
    samples (same draws from the same generator). No KV cache: each new token reruns the whole
    prefix, which at 16 positions costs less than the bookkeeping a cache would."""
    check_sampling(count, temperature)
    check_tokenizer(model, tokenizer)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    names = []
    with no_grad():
        for _ in range(count):
            tokens = [tokenizer.bos]
            for _ in range(model.config.block_size):
                logits = forward(model, np.array([tokens])).data[0, -1]
                token = next_token(logits, temperature, rng)
                if token == tokenizer.bos:
                    break
                tokens.append(token)
            names.append(tokenizer.decode(tokens))
    return names


# --------------------------------------------------------------------------------------------
# faster rungs: the same step with no graph. Forward keeps what backward needs; backward is
# written by hand over whole arrays (fused), then as loops compiled by numba (compiled).


def _rmsnorm_forward(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    s = 1.0 / np.sqrt((x * x).sum(axis=-1, keepdims=True) * (1.0 / x.shape[-1]) + eps)
    return x * s, s


def _rmsnorm_backward(g: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return s * (g - y * ((g * y).sum(axis=-1, keepdims=True) * (1.0 / g.shape[-1])))


def _add_matmul_t(out: np.ndarray, g: np.ndarray, x: np.ndarray) -> None:
    """out += g^T x over every position: a linear layer's weight gradient, in place."""
    out += g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def fused_loss_and_grads(model: MatrixGPT, batch: Batch) -> float:
    """The loss of ``loss(model, batch)`` and its gradients added into every ``p.grad`` in
    place, by hand: the forward pass keeps its activations, the backward pass is each op's
    gradient function called directly, in reverse, with no graph and no Tensor."""
    cfg, p = model.config, model.params
    idx, targets = batch.idx, batch.targets
    b, t = idx.shape
    h, hd, c, eps = cfg.n_head, cfg.head_dim, cfg.n_embd, cfg.norm_eps
    scale = 1.0 / math.sqrt(hd)
    dtype = model.dtype
    weights = (batch.mask / batch.mask.sum()).astype(dtype)
    mask = causal_mask(t)

    def heads(a: np.ndarray) -> np.ndarray:  # (B, T, C) -> (B, H, T, hd)
        return a.reshape(b, t, h, hd).transpose(0, 2, 1, 3)

    def merge(a: np.ndarray) -> np.ndarray:  # (B, H, T, hd) -> (B, T, C)
        return a.transpose(0, 2, 1, 3).reshape(b, t, c)

    x, s0 = _rmsnorm_forward(p.wte.data[idx] + p.wpe.data[:t], eps)
    x_first, saved = x, []
    for layer in p.layers:
        xn, s1 = _rmsnorm_forward(x, eps)
        q, k, v = (
            heads(xn @ w.data.T) for w in (layer.attn_wq, layer.attn_wk, layer.attn_wv)
        )
        scores = np.where(mask, (q @ k.transpose(0, 1, 3, 2)) * scale, -np.inf)
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = e / e.sum(axis=-1, keepdims=True)
        o = merge(att @ v)
        x_mid = o @ layer.attn_wo.data.T + x
        xn2, s2 = _rmsnorm_forward(x_mid, eps)
        hidden = xn2 @ layer.mlp_fc1.data.T
        relu = np.maximum(hidden, 0)
        x = relu @ layer.mlp_fc2.data.T + x_mid
        saved.append((xn, s1, q, k, v, att, o, xn2, s2, hidden, relu))
    logits = x @ p.lm_head.data.T
    top = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - top)
    total = e.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(logits, targets[..., None], -1)
    loss_value = float((weights * (np.log(total) + top - picked)[..., 0]).sum())

    # backward: d(loss)/d(logits) = w * (p - onehot), then each op in reverse
    dz = e / total
    rows, cols = np.indices(targets.shape)
    dz[rows, cols, targets] -= 1.0
    dz *= weights[..., None]
    _add_matmul_t(p.lm_head.grad, dz, x)
    dx = dz @ p.lm_head.data
    for layer, (xn, s1, q, k, v, att, o, xn2, s2, hidden, relu) in zip(
        reversed(p.layers), reversed(saved)
    ):
        _add_matmul_t(layer.mlp_fc2.grad, dx, relu)
        dh = (dx @ layer.mlp_fc2.data) * (hidden > 0)
        _add_matmul_t(layer.mlp_fc1.grad, dh, xn2)
        dx = dx + _rmsnorm_backward(dh @ layer.mlp_fc1.data, xn2, s2)
        _add_matmul_t(layer.attn_wo.grad, dx, o)
        do = heads(dx @ layer.attn_wo.data)
        datt = do @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ do
        dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) * scale
        dq, dk = dscores @ k, dscores.transpose(0, 1, 3, 2) @ q
        dxn = 0
        for w, d in ((layer.attn_wq, dq), (layer.attn_wk, dk), (layer.attn_wv, dv)):
            d = merge(d)
            _add_matmul_t(w.grad, d, xn)
            dxn = dxn + d @ w.data
        dx = dx + _rmsnorm_backward(dxn, xn, s1)
    dx0 = _rmsnorm_backward(dx, x_first, s0)
    p.wpe.grad[:t] += dx0.sum(axis=0)
    np.add.at(p.wte.grad, idx, dx0)
    return loss_value


def fused_step(
    model: MatrixGPT, opt: optim.Optimizer, batch: Batch, lr: float
) -> StepStats:
    """``train_step`` with the hand-fused forward and backward (timed as one: they are one
    function, so forward_s holds both and backward_s is 0)."""
    clock = time.perf_counter
    t0 = clock()
    value = fused_loss_and_grads(model, batch)
    t1 = clock()
    optim.set_lr(opt, lr)
    opt.step()
    opt.zero_grad()
    t2 = clock()
    return StepStats(value, t1 - t0, 0.0, t2 - t1, batch.tokens)


# The compiled rung: the whole step for one document as loops, compiled by numba. At batch 1 a
# numpy call on a 16 x 16 array costs more in overhead (about a microsecond) than in arithmetic;
# in a compiled loop the overhead is gone and what is left is the arithmetic. The weights are
# read from, and the gradients added into, the optimizer's flat buffers (optim.flatten_), at
# the offsets of named_parameters() order.
JIT = {"cache": True, "error_model": "numpy"}


@numba.njit(**JIT)
def _linear_loop(x, w, out):  # out = x @ w.T
    for i in range(x.shape[0]):
        for j in range(w.shape[0]):
            acc = 0.0
            for k in range(w.shape[1]):
                acc += x[i, k] * w[j, k]
            out[i, j] = acc


@numba.njit(**JIT)
def _linear_back_loop(g, x, w, gx, gw):  # gw += g.T @ x; gx += g @ w
    for i in range(x.shape[0]):
        for j in range(w.shape[0]):
            gij = g[i, j]
            if gij != 0.0:
                for k in range(w.shape[1]):
                    gw[j, k] += gij * x[i, k]
                    gx[i, k] += gij * w[j, k]


@numba.njit(**JIT)
def _rmsnorm_loop(x, eps, y, s):
    for i in range(x.shape[0]):
        ms = 0.0
        for k in range(x.shape[1]):
            ms += x[i, k] * x[i, k]
        s[i] = 1.0 / np.sqrt(ms / x.shape[1] + eps)
        for k in range(x.shape[1]):
            y[i, k] = x[i, k] * s[i]


@numba.njit(**JIT)
def _rmsnorm_back_loop(g, y, s, gx):  # gx += s * (g - y * mean(g * y))
    for i in range(g.shape[0]):
        gy = 0.0
        for k in range(g.shape[1]):
            gy += g[i, k] * y[i, k]
        gy /= g.shape[1]
        for k in range(g.shape[1]):
            gx[i, k] += s[i] * (g[i, k] - y[i, k] * gy)


@numba.njit(**JIT)
def compiled_loss_and_grads(
    flat, grad, idx, targets, vocab, block, c, n_head, n_layer, eps
):
    """One document's loss, its gradients added into ``grad``: every op of the model as loops.

    flat/grad: the weights and gradients in named_parameters() order, one 1-D buffer each;
    idx/targets: the document's n input ids and n ids to predict."""
    n, hd, f = idx.shape[0], c // n_head, 4 * c
    scale = 1.0 / np.sqrt(hd)
    wte = flat[: vocab * c].reshape((vocab, c))
    wpe = flat[vocab * c : vocab * c + block * c].reshape((block, c))
    base = vocab * c + block * c
    lm = flat[base : base + vocab * c].reshape((vocab, c))
    g_wte = grad[: vocab * c].reshape((vocab, c))
    g_wpe = grad[vocab * c : vocab * c + block * c].reshape((block, c))
    g_lm = grad[base : base + vocab * c].reshape((vocab, c))
    base += vocab * c
    per_layer = 4 * c * c + 2 * f * c
    # forward, keeping every activation backward needs
    x0 = np.empty((n, c))
    for i in range(n):
        for k in range(c):
            x0[i, k] = wte[idx[i], k] + wpe[i, k]
    xs = np.empty((n_layer + 1, n, c))  # each layer's input (the residual stream)
    s0 = np.empty(n)
    _rmsnorm_loop(x0, eps, xs[0], s0)
    xn, s1 = np.empty((n_layer, n, c)), np.empty((n_layer, n))
    qkv = np.empty((n_layer, 3, n, c))
    att = np.zeros((n_layer, n_head, n, n))
    o, x_mid = np.empty((n_layer, n, c)), np.empty((n_layer, n, c))
    xn2, s2 = np.empty((n_layer, n, c)), np.empty((n_layer, n))
    hidden, relu = np.empty((n_layer, n, f)), np.empty((n_layer, n, f))
    tmp = np.empty((n, c))
    for layer in range(n_layer):
        w = flat[base + layer * per_layer : base + (layer + 1) * per_layer]
        wq = w[: c * c].reshape((c, c))
        wk = w[c * c : 2 * c * c].reshape((c, c))
        wv = w[2 * c * c : 3 * c * c].reshape((c, c))
        wo = w[3 * c * c : 4 * c * c].reshape((c, c))
        w1 = w[4 * c * c : 4 * c * c + f * c].reshape((f, c))
        w2 = w[4 * c * c + f * c :].reshape((c, f))
        _rmsnorm_loop(xs[layer], eps, xn[layer], s1[layer])
        _linear_loop(xn[layer], wq, qkv[layer, 0])
        _linear_loop(xn[layer], wk, qkv[layer, 1])
        _linear_loop(xn[layer], wv, qkv[layer, 2])
        q, k, v = qkv[layer, 0], qkv[layer, 1], qkv[layer, 2]
        for hh in range(n_head):
            lo = hh * hd
            for i in range(n):
                top = -np.inf
                for j in range(i + 1):
                    acc = 0.0
                    for d in range(hd):
                        acc += q[i, lo + d] * k[j, lo + d]
                    att[layer, hh, i, j] = acc * scale
                    top = max(top, acc * scale)
                total = 0.0
                for j in range(i + 1):
                    e = np.exp(att[layer, hh, i, j] - top)
                    att[layer, hh, i, j] = e
                    total += e
                for d in range(hd):
                    o[layer, i, lo + d] = 0.0
                for j in range(i + 1):
                    pij = att[layer, hh, i, j] / total
                    att[layer, hh, i, j] = pij
                    for d in range(hd):
                        o[layer, i, lo + d] += pij * v[j, lo + d]
        _linear_loop(o[layer], wo, tmp)
        x_mid[layer] = tmp + xs[layer]
        _rmsnorm_loop(x_mid[layer], eps, xn2[layer], s2[layer])
        _linear_loop(xn2[layer], w1, hidden[layer])
        relu[layer] = np.maximum(hidden[layer], 0.0)
        _linear_loop(relu[layer], w2, tmp)
        xs[layer + 1] = tmp + x_mid[layer]
    logits = np.empty((n, vocab))
    _linear_loop(xs[n_layer], lm, logits)
    loss = 0.0
    dz = np.empty((n, vocab))
    for i in range(n):
        top = logits[i].max()
        total = 0.0
        for j in range(vocab):
            dz[i, j] = np.exp(logits[i, j] - top)
            total += dz[i, j]
        loss += np.log(total) + top - logits[i, targets[i]]
        for j in range(vocab):
            dz[i, j] = dz[i, j] / total / n  # d(mean loss)/d(logit) = (p - onehot) / n
        dz[i, targets[i]] -= 1.0 / n
    # backward, op by op in reverse
    dx = np.zeros((n, c))
    _linear_back_loop(dz, xs[n_layer], lm, dx, g_lm)
    for layer in range(n_layer - 1, -1, -1):
        w = flat[base + layer * per_layer : base + (layer + 1) * per_layer]
        gw = grad[base + layer * per_layer : base + (layer + 1) * per_layer]
        wq, gq = w[: c * c].reshape((c, c)), gw[: c * c].reshape((c, c))
        wk, gk = (
            w[c * c : 2 * c * c].reshape((c, c)),
            gw[c * c : 2 * c * c].reshape((c, c)),
        )
        wv = w[2 * c * c : 3 * c * c].reshape((c, c))
        gv = gw[2 * c * c : 3 * c * c].reshape((c, c))
        wo = w[3 * c * c : 4 * c * c].reshape((c, c))
        go = gw[3 * c * c : 4 * c * c].reshape((c, c))
        w1 = w[4 * c * c : 4 * c * c + f * c].reshape((f, c))
        g1 = gw[4 * c * c : 4 * c * c + f * c].reshape((f, c))
        w2, g2 = (
            w[4 * c * c + f * c :].reshape((c, f)),
            gw[4 * c * c + f * c :].reshape((c, f)),
        )
        # MLP
        dh = np.zeros((n, f))
        _linear_back_loop(dx, relu[layer], w2, dh, g2)
        for i in range(n):
            for j in range(f):
                if hidden[layer, i, j] <= 0.0:
                    dh[i, j] = 0.0
        dxn = np.zeros((n, c))
        _linear_back_loop(dh, xn2[layer], w1, dxn, g1)
        _rmsnorm_back_loop(dxn, xn2[layer], s2[layer], dx)  # dx: the residual + this
        # attention
        do = np.zeros((n, c))
        _linear_back_loop(dx, o[layer], wo, do, go)
        q, k, v = qkv[layer, 0], qkv[layer, 1], qkv[layer, 2]
        dq, dk, dv = np.zeros((n, c)), np.zeros((n, c)), np.zeros((n, c))
        datt = np.empty(n)
        for hh in range(n_head):
            lo = hh * hd
            for i in range(n):
                dot = 0.0
                for j in range(i + 1):
                    acc = 0.0
                    for d in range(hd):
                        acc += do[i, lo + d] * v[j, lo + d]
                        dv[j, lo + d] += att[layer, hh, i, j] * do[i, lo + d]
                    datt[j] = acc
                    dot += acc * att[layer, hh, i, j]
                for j in range(i + 1):
                    ds = att[layer, hh, i, j] * (datt[j] - dot) * scale
                    for d in range(hd):
                        dq[i, lo + d] += ds * k[j, lo + d]
                        dk[j, lo + d] += ds * q[i, lo + d]
        dxn[:] = 0.0
        _linear_back_loop(dq, xn[layer], wq, dxn, gq)
        _linear_back_loop(dk, xn[layer], wk, dxn, gk)
        _linear_back_loop(dv, xn[layer], wv, dxn, gv)
        _rmsnorm_back_loop(dxn, xn[layer], s1[layer], dx)
    dx0 = np.zeros((n, c))
    _rmsnorm_back_loop(dx, xs[0], s0, dx0)
    for i in range(n):
        for k in range(c):
            g_wpe[i, k] += dx0[i, k]
            g_wte[idx[i], k] += dx0[i, k]
    return loss / n


def flat_buffers(model: MatrixGPT) -> tuple[np.ndarray, np.ndarray]:
    """The one data and one gradient buffer the parameters are views of (``make_optimizer``
    puts them there), or a ValueError: the compiled step reads weights by offset.

    Checking the layout costs more than the compiled step's arithmetic, so it is done once
    per model; later calls only check that every parameter is still a view of the buffers
    found (re-flattening or replacing a parameter's array makes new ones)."""
    params = model.parameters()
    found = model.flat
    if found is not None:
        data, grad = found
        owner_d, owner_g = data.base, grad.base
        if all(p.data.base is owner_d and p.grad.base is owner_g for p in params):
            return found
    data = optim.flat_segment([p.data for p in params])
    grad = optim.flat_segment([p.grad for p in params])
    if data is None or grad is None:
        raise ValueError(
            "the compiled step needs the parameters in one flat buffer: make the optimizer "
            "with gpt.make_optimizer(model) (or optim.flatten_) first"
        )
    model.flat = data, grad
    return data, grad


def compiled_step(
    model: MatrixGPT, opt: optim.Optimizer, batch: Batch, lr: float
) -> StepStats:
    """``train_step`` for one document (microgpt's batch 1), forward and backward compiled
    into one numba function; float64 only (the loops accumulate in float64)."""
    if batch.idx.shape[0] != 1:
        raise ValueError(
            f"the compiled step trains on one document, got a batch of {batch.idx.shape[0]}"
        )
    if model.dtype != np.float64:
        raise TypeError(f"the compiled step is float64 only, the model is {model.dtype}")
    cfg = model.config
    clock = time.perf_counter
    t0 = clock()
    data, grad = flat_buffers(model)
    n = batch.tokens
    value = compiled_loss_and_grads(
        data,
        grad,
        batch.idx[0, :n],
        batch.targets[0, :n],
        cfg.vocab_size,
        cfg.block_size,
        cfg.n_embd,
        cfg.n_head,
        cfg.n_layer,
        cfg.norm_eps,
    )
    t1 = clock()
    optim.set_lr(opt, lr)
    opt.step()
    opt.zero_grad()
    t2 = clock()
    return StepStats(float(value), t1 - t0, 0.0, t2 - t1, n)


# --------------------------------------------------------------------------------------------
# command line

IMPLEMENTATIONS: dict[str, Callable[..., StepStats]] = {
    "tensor": train_step,
    "fused": fused_step,
    "compiled": compiled_step,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m microgpt_lib.gpt",
        description="Train microgpt as a GPT made of matrices (numpy Tensors) and sample.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--batch", type=int, default=1, help="documents per step (1: microgpt)"
    )
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument(
        "--impl",
        choices=sorted(IMPLEMENTATIONS),
        default="tensor",
        help="which step to run",
    )
    return parser


def main(argv: list[str] | None = None) -> TrainLog:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    recipe, docs, tokenizer, config = read_run(parser, args)
    model, order, rng = start_run(docs, config, recipe.seed, args.dtype)
    print(
        f"{len(docs):,} documents | vocabulary {config.vocab_size} | "
        f"{config.num_params():,} parameters | impl {args.impl} | batch {args.batch} | "
        f"{args.dtype} | {recipe.steps} steps"
    )

    def print_step(step: int, stats: StepStats) -> None:
        print(
            f"step {step + 1:4d} / {recipe.steps} | loss {stats.loss:.4f} | "
            f"{1e3 * stats.total_s:.2f} ms",
            flush=True,
        )

    log = train(
        model,
        order,
        tokenizer,
        recipe,
        batch_size=args.batch,
        step_fn=IMPLEMENTATIONS[args.impl],
        on_step=print_step,
    )
    print(f"median {log.median_ms:.3f} ms per step ({args.impl}, batch {args.batch})")
    for i, name in enumerate(
        sample(model, tokenizer, args.samples, args.temperature, rng), start=1
    ):
        print(f"sample {i:2d}: {name}")
    return log


if __name__ == "__main__":
    run_command_line(main)
