"""Training for real: chapter 09's GPT in torch, batched, scheduled, checkpointed, and sampled.

    TrainSettings              every setting of a run, one frozen block (nanoGPT's names)
    PRESETS, settings_from(...) "microgpt" and "names", then --key=value overrides, type-checked
    TorchGPT                   the model in torch: chapter 09's architecture and weight names
    KVCache, generate(...)     sampling with temperature and top-k, with or without a KV cache
    sample_names(...)          whole documents from BOS to BOS, many at once
    train(settings, ...)       the loop: batches, eval, warm-up + cosine, clipping,
                               accumulation, autocast, checkpoints, resume, several processes
    save_checkpoint / load_checkpoint   atomic writes; clear errors for bad or foreign files

Command line (nanoGPT's style: every setting is ``--key=value``):

    python -m microgpt_lib.train --preset=names --max_iters=300
    python -m microgpt_lib.train sample --ckpt=out/best.pt --num_samples=10 --top_k=5
    torchrun --nproc_per_node 2 -m microgpt_lib.train --preset=names --max_iters=300

Two backends run the same loop: ``backend=numpy`` is chapter 09's MatrixGPT with chapter 08's
AdamW, ``backend=torch`` is TorchGPT with torch.optim.AdamW on the CPU, CUDA or MPS. Both start
from ``config.init_weights`` with the run's seed, so given the same settings they give the same
losses (to float tolerance).

``batch_size`` is the global batch: documents per optimizer step, over all accumulation
micro-steps and all processes. Each micro-batch's loss is its tokens' summed loss divided by
the whole batch's token count, so the gradients add up to exactly the gradient of the global
batch's mean loss however the batch is split: under torchrun the same command line gives the
same losses as without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import io
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import device as devices
from . import gpt, optim, tensor
from .bench import atomic_write
from .config import GPTConfig, GPTParams, init_weights, param_shapes
from .data import CharTokenizer, load_documents, load_names, train_val_split
from .scalar_gpt import check_sampling, check_tokenizer

# --------------------------------------------------------------------------------------------
# the settings of a run


@dataclass(frozen=True)
class TrainSettings:
    """Every knob of a run, with nanoGPT's names. Defaults are the ``names`` preset's."""

    # data: one document per line; "" is the names dataset (chapter 02's 32,033 names)
    data: str = ""
    val_fraction: float = 0.1
    seed: int = 42  # the split, the weights, and sampling
    # the model (chapter 09's GPT; init_std as config.GPTConfig)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 16
    init_std: float = 0.08
    # the optimizer: AdamW, decay on every weight matrix (nanoGPT's groups)
    batch_size: int = 32  # documents per step, over all micro-steps and processes
    gradient_accumulation_steps: int = 1
    max_iters: int = 3000
    learning_rate: float = 3e-3
    schedule: str = (
        "cosine"  # cosine (warm-up, then to min_lr) | linear (microgpt) | constant
    )
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # where the cosine reaches min_lr; 0 means max_iters
    min_lr: float = 3e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    # evaluation, logging, checkpoints
    eval_interval: int = (
        250  # estimate both splits' loss and checkpoint every this many steps
    )
    eval_iters: int = 10  # batches per split in each estimate
    log_interval: int = 50
    out_dir: str = "out"
    init_from: str = "scratch"  # scratch | resume (from out_dir/last.pt)
    # the system
    backend: str = "torch"  # torch | numpy
    device: str = "cpu"  # cpu | cuda | mps | auto (CUDA, then MPS, then the CPU)
    dtype: str = (
        "float32"  # float32 | float64 | bfloat16 (autocast) | float16 (CUDA, scaled)
    )
    compile: bool = False  # torch.compile the model

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        positive = (
            "n_layer",
            "n_head",
            "n_embd",
            "block_size",
            "batch_size",
            "max_iters",
        )
        for name in (
            *positive,
            "gradient_accumulation_steps",
            "eval_iters",
            "log_interval",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_iters", "lr_decay_iters", "eval_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "eps", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("min_lr", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_lr > self.learning_rate:
            raise ValueError(
                f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})"
            )
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if self.schedule == "cosine" and self.warmup_iters >= self.decay_iters:
            raise ValueError(
                f"warmup_iters ({self.warmup_iters}) must be below the step where the cosine "
                f"ends ({self.decay_iters}: lr_decay_iters, or max_iters when it is 0)"
            )
        self.model_config(vocab_size=2)  # n_embd divisible by n_head, and the rest

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            init_std=self.init_std,
        )

    def lr_schedule(self) -> Callable[[int], float]:
        """The learning rate of step i (from 0): chapter 08's schedules."""
        if self.schedule == "linear":
            return optim.linear_decay_lr(self.learning_rate, self.max_iters)
        if self.schedule == "constant":
            return optim.constant_lr(self.learning_rate)
        return optim.warmup_cosine_lr(
            self.learning_rate, self.warmup_iters, self.decay_iters, self.min_lr
        )

    def replace(self, **changes: Any) -> TrainSettings:
        return dataclasses.replace(self, **changes)


CHOICES = {
    "schedule": ("cosine", "linear", "constant"),
    "init_from": ("scratch", "resume"),
    "backend": ("torch", "numpy"),
    "device": ("cpu", "cuda", "mps", "auto"),
    "dtype": ("float32", "float64", "bfloat16", "float16"),
}

PRESETS: dict[str, dict[str, Any]] = {
    # Karpathy's microgpt: one name per step, Adam (0.85, 0.99), lr 0.01 decaying linearly to 0
    "microgpt": dict(
        n_layer=1,
        n_head=4,
        n_embd=16,
        block_size=16,
        batch_size=1,
        max_iters=1000,
        learning_rate=0.01,
        schedule="linear",
        warmup_iters=0,
        min_lr=0.0,
        weight_decay=0.0,
        beta1=0.85,
        beta2=0.99,
        grad_clip=0.0,
        eval_interval=250,
        log_interval=100,
    ),
    # makemore's default transformer shape (4 layers, 64 wide, 4 heads, batch 32)
    "names": {},
}

# settings a resumed run may change: where it runs and for how long, not what it computes
RESUME_MAY_CHANGE = (
    "max_iters",
    "device",
    "compile",
    "out_dir",
    "init_from",
    "log_interval",
)


def _check_type(name: str, value: Any, kind: Any) -> None:
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise TypeError(
            f"{name} must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )


def parse_value(name: str, text: str, kind: Any) -> Any:
    """One ``--key=value``'s value as its field's type, or a ValueError that names the key."""
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, kind)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{name} takes true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{name} takes {kind.__name__}, got {text!r}") from None


def parse_overrides(args: Sequence[str], fields_of: type) -> dict[str, Any]:
    """``["--key=value", ...]`` as {key: typed value}, over a dataclass's fields; a key the
    dataclass lacks is an error that suggests the nearest one."""
    types = {f.name: f.type for f in dataclasses.fields(fields_of)}
    out: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"expected --key=value, got {arg!r}")
        key, _, text = arg[2:].partition("=")
        if key not in types:
            near = difflib.get_close_matches(key, types, n=1)
            hint = f" (did you mean --{near[0]}?)" if near else ""
            raise ValueError(f"unknown setting --{key}{hint}")
        out[key] = parse_value(key, text, types[key])
    return out


def settings_from(
    args: Sequence[str] = (), preset: str = "names", **changes: Any
) -> TrainSettings:
    """A preset, then ``--key=value`` arguments (``--preset=`` among them picks the preset),
    then keyword changes: the settings of a run, checked."""
    rest = []
    for arg in args:
        if arg.startswith("--preset="):
            preset = arg.partition("=")[2]
        else:
            rest.append(arg)
    if preset not in PRESETS:
        raise ValueError(
            f"unknown preset {preset!r}; the presets are {', '.join(PRESETS)}"
        )
    return TrainSettings(
        **{**PRESETS[preset], **parse_overrides(rest, TrainSettings), **changes}
    )


# --------------------------------------------------------------------------------------------
# the model in torch: chapter 09's GPT, its weights under the same names


def rmsnorm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the channels: chapter 09's RMSNorm, no gain."""
    return F.rms_norm(x, (x.shape[-1],), eps=eps)


@dataclass
class KVCache:
    """Each layer's keys and values so far, (B, heads, block_size, head_dim), preallocated:
    a new token's query attends to them instead of recomputing the whole prefix."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, model: TorchGPT, batch: int) -> KVCache:
        cfg, w = model.config, model.wte
        shape = (batch, cfg.n_head, cfg.block_size, cfg.head_dim)
        new = [
            torch.zeros(shape, dtype=w.dtype, device=w.device)
            for _ in range(2 * cfg.n_layer)
        ]
        return cls(new[: cfg.n_layer], new[cfg.n_layer :])


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int = 0
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v where query i (at position past + i) sees keys 0..past+i."""
    tq, tk = q.shape[-2], k.shape[-2]
    if tq == 1:  # one new token sees every key there is
        return F.scaled_dot_product_attention(q, k, v)
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(past)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


class Layer(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        shapes = dict(param_shapes(config).layers[0].named_parameters())
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.config = config

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None) -> torch.Tensor:
        cfg = self.config
        b, t, c = x.shape
        h, hd, eps = cfg.n_head, cfg.head_dim, cfg.norm_eps
        residual = x
        x = rmsnorm(x, eps)
        q, k, v = (
            (x @ w.T).view(b, t, h, hd).transpose(1, 2)
            for w in (self.attn_wq, self.attn_wk, self.attn_wv)
        )
        past = 0
        if cache is not None:
            past = cache.length
            cache.keys[layer][:, :, past : past + t] = k
            cache.values[layer][:, :, past : past + t] = v
            k = cache.keys[layer][:, :, : past + t]
            v = cache.values[layer][:, :, : past + t]
        x = causal_attention(q, k, v, past).transpose(1, 2).reshape(b, t, c)
        x = x @ self.attn_wo.T + residual
        residual = x
        x = rmsnorm(x, eps)
        return torch.relu(x @ self.mlp_fc1.T) @ self.mlp_fc2.T + residual


class TorchGPT(nn.Module):
    """Chapter 09's GPT as a torch Module: parameters wte, wpe, lm_head, layers.i.attn_wq, ...,
    in ``GPTParams.named_parameters()`` order, each (outputs, inputs) as ``y = W x`` reads."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        shapes = param_shapes(config)
        self.wte = nn.Parameter(torch.empty(shapes.wte))
        self.wpe = nn.Parameter(torch.empty(shapes.wpe))
        self.lm_head = nn.Parameter(torch.empty(shapes.lm_head))
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.n_layer))

    @classmethod
    def from_weights(
        cls,
        config: GPTConfig,
        weights: GPTParams[Any],
        dtype: torch.dtype = torch.float32,
    ) -> TorchGPT:
        """Copy matrices (``init_weights``' lists, numpy arrays, tensors) into a new model."""
        model = cls(config).to(dtype)
        ours = dict(model.named_parameters())
        if weights.names() != list(ours):
            raise ValueError(
                f"weights are {weights.names()}, this model has {list(ours)}"
            )
        with torch.no_grad():
            for name, matrix in weights.named_parameters():
                value = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
                if value.shape != ours[name].shape:
                    raise ValueError(
                        f"weights[{name!r}] is {tuple(value.shape)}, this config needs "
                        f"{tuple(ours[name].shape)}"
                    )
                ours[name].copy_(value)
        return model

    def weights(self) -> GPTParams[np.ndarray]:
        """The weights as float64 numpy arrays, in chapter 09's container."""
        return GPTParams.from_matrices(
            p.detach().to("cpu", torch.float64).numpy().copy() for p in self.parameters()
        )

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for the token after each position; with a cache, ``idx`` is
        the next T tokens after the cache's and the cache grows by T."""
        cfg = self.config
        b, t = idx.shape
        start = cache.length if cache is not None else 0
        if start + t > cfg.block_size:
            raise ValueError(
                f"{start + t} positions, but the model has block_size {cfg.block_size}"
            )
        x = rmsnorm(self.wte[idx] + self.wpe[start : start + t], cfg.norm_eps)
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache)
        if cache is not None:
            cache.length += t
        return x @ self.lm_head.T


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) at every position, in float32 at least (autocast keeps it there)."""
    v = logits.shape[-1]
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()
    flat = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), reduction="none")
    return flat.view(targets.shape)


# --------------------------------------------------------------------------------------------
# sampling


def top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k largest logits (and any tied with the k-th) kept, the rest -inf; a copy."""
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def sampling_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """The distribution the next token is drawn from: softmax(logits / temperature) over each
    row's top_k most likely tokens (0: all of them), 0 elsewhere."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    if top_k and top_k < logits.shape[-1]:
        logits = top_k_logits(logits, top_k)
    return torch.softmax(logits, dim=-1)


@torch.inference_mode()  # no_grad, and no version counters either: less overhead per op
def generate(
    model: TorchGPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """(B, T0) prompts -> (B, T0 + max_new_tokens): each new token drawn from
    softmax(logits / temperature) over the top_k most likely (0: all). With the cache each step
    runs the model on one new token; without it, on the whole sequence so far."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {top_k}")
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (B, T) with T >= 1, got {tuple(prompt.shape)}")
    total = prompt.shape[1] + max_new_tokens
    if total > model.config.block_size + 1:
        raise ValueError(
            f"{prompt.shape[1]} + {max_new_tokens} tokens: the model reads at most "
            f"block_size = {model.config.block_size}, so it can emit up to "
            f"{model.config.block_size + 1 - prompt.shape[1]} after this prompt"
        )
    tokens = prompt
    cache = KVCache.empty(model, prompt.shape[0]) if use_cache else None
    step_input = prompt
    for _ in range(max_new_tokens):
        logits = model(step_input if use_cache else tokens, cache)[:, -1]
        probs = sampling_probs(logits, temperature, top_k)
        nxt = torch.multinomial(probs, 1, generator=generator)
        tokens = torch.cat([tokens, nxt], dim=1)
        step_input = nxt
    return tokens


def sample_names(
    model: TorchGPT,
    tokenizer: CharTokenizer,
    count: int = 20,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 42,
    use_cache: bool = True,
) -> list[str]:
    """``count`` documents at once, each from BOS until the next BOS (or block_size)."""
    check_sampling(count, temperature)
    check_tokenizer(model, tokenizer)
    if count == 0:
        return []
    device = model.wte.device
    generator = torch.Generator(device=device).manual_seed(seed)
    prompt = torch.full((count, 1), tokenizer.bos, dtype=torch.long, device=device)
    out = generate(
        model, prompt, model.config.block_size, temperature, top_k, generator, use_cache
    )
    names = []
    for row in out[:, 1:].tolist():
        end = row.index(tokenizer.bos) if tokenizer.bos in row else len(row)
        names.append(tokenizer.decode(row[:end]))
    return names


# --------------------------------------------------------------------------------------------
# data: a deterministic split, and step i's batch as a pure function of i


@dataclass(frozen=True)
class Dataset:
    train: list[list[int]]  # token lists, BOS ... BOS
    val: list[list[int]]
    tokenizer: CharTokenizer
    fingerprint: str  # sha256 of the documents: a checkpoint knows what it was trained on


def load_dataset(
    settings: TrainSettings, documents: Sequence[str] | None = None
) -> Dataset:
    docs = list(documents) if documents is not None else None
    if docs is None:
        docs = load_documents(settings.data) if settings.data else load_names()
    tokenizer = CharTokenizer.from_documents(docs)
    train_docs, val_docs = train_val_split(docs, settings.val_fraction, settings.seed)
    digest = hashlib.sha256("\n".join(docs).encode()).hexdigest()
    encode = tokenizer.encode_document
    return Dataset(
        [encode(d) for d in train_docs], [encode(d) for d in val_docs], tokenizer, digest
    )


def step_documents(
    docs: Sequence[list[int]], step: int, batch_size: int
) -> list[list[int]]:
    """Step i's global batch: documents i*B .. i*B + B - 1 of the split, wrapping around."""
    start = step * batch_size
    return [docs[(start + j) % len(docs)] for j in range(batch_size)]


def real_tokens(docs: Sequence[list[int]], block_size: int) -> int:
    return sum(min(block_size, len(d) - 1) for d in docs)


def micro_batches(
    docs: Sequence[list[int]], micro_steps: int, rank: int, world: int
) -> list[list[list[int]]]:
    """This process's share of a global batch, one list of documents per micro-step."""
    size = len(docs) // (micro_steps * world)
    return [
        list(docs[(a * world + rank) * size : (a * world + rank + 1) * size])
        for a in range(micro_steps)
    ]


# --------------------------------------------------------------------------------------------
# two backends behind the same few methods: the loop does not know which it drives


class TorchBackend:
    """TorchGPT, torch.optim.AdamW (fused where the device has it), autocast, DDP."""

    def __init__(self, s: TrainSettings, config: GPTConfig, weights: GPTParams[Any]):
        self.device = devices.pick_device(None if s.device == "auto" else s.device)
        self.world = world_size()
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if s.dtype == "float16" and self.device.type != "cuda":
            raise ValueError(
                "dtype float16 trains with a GradScaler, on CUDA; on the CPU or MPS use "
                "bfloat16 (same range as float32, no scaler needed)"
            )
        if s.dtype == "float64" and "float64" not in devices.supported_dtypes(
            self.device
        ):
            raise ValueError(
                f"{self.device.type} has no float64; use float32 or bfloat16"
            )
        master = torch.float64 if s.dtype == "float64" else torch.float32
        self.model = TorchGPT.from_weights(config, weights, master).to(self.device)
        self.autocast = (
            torch.autocast(self.device.type, dtype=devices.DTYPES[s.dtype])
            if s.dtype in ("bfloat16", "float16")
            else contextlib.nullcontext()
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=s.dtype == "float16")
        self.compiled = s.compile
        self.step_model = self._wrap(
            torch.compile(self.model) if s.compile else self.model
        )
        # chapter 08's rule (nanoGPT's): every matrix decays, vectors and scalars do not
        groups = [
            {"params": [p for _, p in g["params"]], "weight_decay": g["weight_decay"]}
            for g in optim.decay_groups(self.model.named_parameters(), s.weight_decay)
        ]
        kwargs = dict(lr=s.learning_rate, betas=(s.beta1, s.beta2), eps=s.eps)
        try:
            self.optimizer = torch.optim.AdamW(groups, fused=True, **kwargs)
            self.fused = True
        except (RuntimeError, TypeError):  # no fused kernel for this device or dtype
            self.optimizer = torch.optim.AdamW(groups, **kwargs)
            self.fused = False

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The training forward; if torch.compile cannot compile here (no C++ compiler, an
        unsupported platform), say so once and go on without it."""
        if not self.compiled:
            return self.step_model(idx)
        try:
            return self.step_model(idx)
        # torch._dynamo wraps each backend's failure in a different exception type
        except Exception as error:
            reason = str(error).strip().splitlines()[0][:200] if str(error) else ""
            print(
                f"torch.compile does not work here ({type(error).__name__}: {reason}); "
                "training without it",
                file=sys.stderr,
            )
            self.compiled = False
            self.step_model = self._wrap(self.model)
            return self.step_model(idx)

    def _tensors(self, docs: list[list[int]], config: GPTConfig, weight: float):
        batch = gpt.make_batch(docs, config)
        idx = torch.from_numpy(batch.idx).to(self.device)
        targets = torch.from_numpy(batch.targets).to(self.device)
        loss_dtype = torch.promote_types(self.model.wte.dtype, torch.float32)
        mask = torch.from_numpy(batch.mask).to(self.device, loss_dtype) * weight
        return idx, targets, mask

    def micro_step(
        self, docs: list[list[int]], weight: float, sync: bool
    ) -> torch.Tensor:
        """Add the gradient of sum(token losses) * weight; return that (unscaled) loss."""
        idx, targets, mask = self._tensors(docs, self.model.config, weight)
        no_sync = self.world > 1 and not sync
        with self.step_model.no_sync() if no_sync else contextlib.nullcontext():
            with self.autocast:
                part = (token_losses(self._forward(idx), targets) * mask).sum()
            # DDP averages the processes' gradients; the parts are meant to be summed
            self.scaler.scale(part * self.world).backward()
        return part.detach()

    def total(self, value: torch.Tensor | float) -> float:
        """A number summed over the processes (the global batch's loss)."""
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(value)
        return float(value)

    def clip(self, max_norm: float) -> float:
        self.scaler.unscale_(self.optimizer)
        return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))

    def step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_sum(self, docs: list[list[int]]) -> float:
        idx, targets, mask = self._tensors(docs, self.model.config, 1.0)
        with self.autocast:
            return float((token_losses(self.model(idx), targets) * mask).sum())

    def synchronize(self) -> None:
        devices.synchronize(self.device)

    def weights(self) -> GPTParams[np.ndarray]:
        return self.model.weights()

    def state(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class NumpyBackend:
    """Chapter 09's MatrixGPT and chapter 08's AdamW (one flat buffer, the fused update)."""

    def __init__(self, s: TrainSettings, config: GPTConfig, weights: GPTParams[Any]):
        if s.dtype not in ("float64", "float32"):
            raise ValueError(
                f"the numpy backend computes in float64 or float32, not {s.dtype}"
            )
        if s.compile:
            raise ValueError(
                "compile is torch's: the numpy backend has nothing to compile"
            )
        if s.device not in ("cpu", "auto"):
            raise ValueError(f"the numpy backend runs on the CPU, not {s.device}")
        if world_size() > 1:
            raise ValueError("several processes need backend=torch (DDP)")
        self.world, self.compiled, self.fused = 1, False, True
        self.model = gpt.MatrixGPT.from_weights(config, weights, s.dtype)
        named = self.model.named_parameters()
        optim.flatten_(named)
        self.optimizer = optim.AdamW(
            optim.decay_groups(named, s.weight_decay),
            lr=s.learning_rate,
            betas=(s.beta1, s.beta2),
            eps=s.eps,
        )

    def micro_step(self, docs: list[list[int]], weight: float, sync: bool) -> float:
        batch = gpt.make_batch(docs, self.model.config)
        out = tensor.cross_entropy(
            gpt.forward(self.model, batch.idx), batch.targets, batch.mask * weight
        )
        out.backward()
        return out.item()

    def total(self, value: float) -> float:
        return float(value)

    def clip(self, max_norm: float) -> float:
        return optim.clip_grad_norm(self.model.named_parameters(), max_norm)

    def step(self, lr: float) -> None:
        optim.set_lr(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad()

    def eval_sum(self, docs: list[list[int]]) -> float:
        batch = gpt.make_batch(docs, self.model.config)
        with tensor.no_grad():
            logits = gpt.forward(self.model, batch.idx)
            return tensor.cross_entropy(logits, batch.targets, batch.mask).item()

    def synchronize(self) -> None:
        pass

    def weights(self) -> GPTParams[np.ndarray]:
        return self.model.weights().map(lambda a: a.astype(np.float64))

    def state(self) -> dict[str, Any]:
        return _to_torch(
            {
                "model": dict(self.model.weights().named_parameters()),
                "optimizer": self.optimizer.state_dict(),
            }
        )

    def load_state(self, state: dict[str, Any]) -> None:
        for name, p in self.model.named_parameters():
            p.data[...] = state["model"][name].numpy()
        self.optimizer.load_state_dict(_to_numpy(state["optimizer"]))


def _to_torch(
    value: Any,
) -> Any:  # numpy arrays as tensors: torch.load(weights_only) reads them
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_torch(v) for v in value)
    return value


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    return value


BACKENDS = {"torch": TorchBackend, "numpy": NumpyBackend}


# --------------------------------------------------------------------------------------------
# several processes: torchrun sets RANK and WORLD_SIZE; torch's process groups do the rest


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def process_group(device: str) -> Iterator[None]:
    """Join torchrun's process group for the run (gloo on the CPU, nccl on CUDA), if any."""
    if world_size() == 1 or torch.distributed.is_initialized():
        yield
        return
    use_nccl = device in ("cuda", "auto") and torch.cuda.is_available()
    if use_nccl:  # one GPU per process, before NCCL starts
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if use_nccl else "gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------------------------
# checkpoints


CHECKPOINT_FORMAT = "microgpt-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or from another run."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the bad step touched weights."""


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> Path:
    """Serialise, then write atomically (``bench.atomic_write``: a temporary file beside
    ``path``, flushed to disk, renamed over it). A crash mid-write leaves the previous
    checkpoint whole."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(Path(path), buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by ``save_checkpoint``, or a CheckpointError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises a different type for each way a file is bad
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a microgpt checkpoint ({CHECKPOINT_FORMAT})"
        )
    return checkpoint


def config_differences(saved: dict[str, Any], settings: TrainSettings) -> list[str]:
    """What a resumed run would compute differently: every setting but RESUME_MAY_CHANGE."""
    now = dataclasses.asdict(settings)
    return [
        f"{key} = {saved.get(key)!r} in the checkpoint, {now[key]!r} now"
        for key in now
        if key not in RESUME_MAY_CHANGE and saved.get(key) != now[key]
    ]


def model_from_checkpoint(
    checkpoint: dict[str, Any] | str | os.PathLike, device: str = "cpu"
) -> tuple[TorchGPT, CharTokenizer]:
    """The model and tokenizer of a checkpoint (from either backend), ready to sample."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    config = GPTConfig(**checkpoint["model_config"])
    weights = GPTParams.from_matrices(
        checkpoint["model"][name].double().numpy()
        for name in param_shapes(config).names()
    )
    dtype = (
        torch.float64 if checkpoint["settings"]["dtype"] == "float64" else torch.float32
    )
    model = TorchGPT.from_weights(config, weights, dtype).to(devices.pick_device(device))
    return model.eval(), CharTokenizer(checkpoint["chars"])


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class RunLog:
    """What a run did: one row per step, one per evaluation. Plain numbers (checkpointed)."""

    # per step: iter, loss, lr, norm (before clipping; nan without it), ms, tokens
    steps: list[dict[str, float]] = field(default_factory=list)
    # per evaluation: iter, train, val (mean loss per token), seconds of training so far
    evals: list[dict[str, float]] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return [s["loss"] for s in self.steps]

    @property
    def median_ms(self) -> float:
        return statistics.median(s["ms"] for s in self.steps)

    @property
    def best_val(self) -> float:
        return min((e["val"] for e in self.evals), default=math.inf)


@dataclass
class RunResult:
    settings: TrainSettings
    log: RunLog
    backend: Any  # TorchBackend or NumpyBackend: .model, .optimizer
    dataset: Dataset
    out_dir: Path

    @property
    def model(self) -> Any:
        return self.backend.model

    def torch_model(self) -> TorchGPT:
        """The trained model as a TorchGPT (the numpy backend's weights copied, in float64)."""
        if isinstance(self.backend.model, TorchGPT):
            return self.backend.model.eval()
        config = self.backend.model.config
        return TorchGPT.from_weights(config, self.backend.weights(), torch.float64).eval()


def estimate_loss(
    backend: Any, dataset: Dataset, settings: TrainSettings, world: int, me: int
) -> dict[str, float]:
    """Mean loss per token on the same eval_iters batches of each split every time (fixed
    batches: the curve moves because the model does, not the sample); the processes share
    the batches and add up their sums."""
    out = {}
    for split, docs in (("train", dataset.train), ("val", dataset.val)):
        count = min(len(docs), settings.eval_iters * settings.batch_size)
        chunks = [
            docs[i : i + settings.batch_size]
            for i in range(0, count, settings.batch_size)
        ]
        total = sum(backend.eval_sum(c) for j, c in enumerate(chunks) if j % world == me)
        out[split] = backend.total(total) / real_tokens(docs[:count], settings.block_size)
    return out


def train(
    settings: TrainSettings,
    documents: Sequence[str] | None = None,
    *,
    progress: bool = False,
    verbose: bool = True,
    on_step: Callable[[int, float, Any], Any] | None = None,
) -> RunResult:
    """Train as ``settings`` say; print nanoGPT-style lines (rank 0, when verbose).

    ``documents`` replaces the data file (the notebook passes lists). ``on_step(i, loss, model)``
    is called after each step (to crash a run on purpose, or to watch it)."""
    with process_group(settings.device):
        return _train(settings, documents, progress, verbose, on_step)


def _train(settings, documents, progress, verbose, on_step) -> RunResult:
    from tqdm.auto import tqdm

    s = settings
    world, me = world_size(), rank()
    if s.batch_size % (s.gradient_accumulation_steps * world):
        raise ValueError(
            f"batch_size {s.batch_size} does not split into {s.gradient_accumulation_steps} "
            f"micro-steps x {world} processes"
        )
    dataset = load_dataset(s, documents)
    config = s.model_config(dataset.tokenizer.vocab_size)
    weights = init_weights(config, s.seed)
    backend = BACKENDS[s.backend](s, config, weights)
    out_dir = Path(s.out_dir)
    log, start, elapsed = RunLog(), 0, 0.0
    say = print if verbose and me == 0 else (lambda *a, **k: None)

    if s.init_from == "resume":
        checkpoint = load_checkpoint(out_dir / "last.pt")
        differences = config_differences(checkpoint["settings"], s)
        if checkpoint["data"] != dataset.fingerprint:
            differences.append(
                "the documents differ from those the checkpoint trained on"
            )
        if differences:
            raise CheckpointError(
                f"{out_dir / 'last.pt'} is from another run: " + "; ".join(differences)
            )
        backend.load_state(checkpoint)
        start, elapsed = checkpoint["iter_num"], checkpoint["seconds"]
        log = RunLog(checkpoint["log"]["steps"], checkpoint["log"]["evals"])
        random.setstate(checkpoint["rng"]["python"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        say(f"resumed from {out_dir / 'last.pt'} at step {start}")
    say(
        f"{len(dataset.train):,} train / {len(dataset.val):,} val documents | "
        f"{config.num_params():,} parameters | {s.backend} on "
        f"{getattr(backend, 'device', 'cpu')} | {s.dtype} | batch {s.batch_size} "
        f"= {s.gradient_accumulation_steps} micro-steps x {world} processes"
    )
    if s.compile and world == 1:
        say("compiling the model (the first step waits for it)")

    def evaluate(step: int) -> dict[str, float]:
        losses = estimate_loss(backend, dataset, s, world, me)
        log.evals.append({"iter": step, **losses, "seconds": elapsed})
        say(
            f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
        )
        return losses

    def checkpoint_now(step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            **backend.state(),
            "settings": dataclasses.asdict(s),
            "model_config": dataclasses.asdict(config),
            "chars": dataset.tokenizer.chars,
            "data": dataset.fingerprint,
            "iter_num": step,
            "seconds": elapsed,
            "best_val_loss": log.best_val,
            "log": {"steps": log.steps, "evals": log.evals},
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
        }

    if start == 0 and s.eval_interval:
        evaluate(0)
    schedule = s.lr_schedule()
    micro = s.gradient_accumulation_steps
    bar = tqdm(
        range(start, s.max_iters),
        desc="training",
        unit="step",
        disable=not progress or me != 0,
        initial=start,
        total=s.max_iters,
    )
    for it in bar:
        t0 = time.perf_counter()
        lr = schedule(it)
        docs = step_documents(dataset.train, it, s.batch_size)
        tokens = real_tokens(docs, s.block_size)
        weight = 1.0 / tokens
        parts = micro_batches(docs, micro, me, world)
        loss = sum(
            backend.micro_step(b, weight, a == micro - 1) for a, b in enumerate(parts)
        )
        loss = backend.total(loss)
        if not math.isfinite(loss):
            last = out_dir / "last.pt"
            kept = (
                f"; the last good checkpoint, {last}, is untouched"
                if last.exists()
                else ""
            )
            raise NonFiniteLossError(
                f"the loss is {loss} at step {it} (lr {lr:.3g}): stopped before the "
                f"optimizer step{kept}. Lower learning_rate, or set grad_clip"
            )
        norm = backend.clip(s.grad_clip) if s.grad_clip else math.nan
        backend.step(lr)
        backend.synchronize()
        ms = 1e3 * (time.perf_counter() - t0)
        elapsed += ms / 1e3
        log.steps.append(
            {"iter": it, "loss": loss, "lr": lr, "norm": norm, "ms": ms, "tokens": tokens}
        )
        if progress:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if it % s.log_interval == 0 or it == s.max_iters - 1:
            line = f"iter {it} | loss {loss:.4f} | lr {lr:.2e} | {ms:.2f} ms"
            if progress and me == 0 and verbose:
                bar.write(line, file=sys.stdout)
            else:
                say(line)
        done = it + 1
        if s.eval_interval and (done % s.eval_interval == 0 or done == s.max_iters):
            before = log.best_val
            losses = evaluate(done)
            if me == 0:
                state = checkpoint_now(done)
                save_checkpoint(state, out_dir / "last.pt")
                if losses["val"] < before:
                    save_checkpoint(state, out_dir / "best.pt")
        if on_step is not None:
            on_step(it, loss, backend.model)
    bar.close()
    if log.steps:
        say(f"median {log.median_ms:.2f} ms per step")
    return RunResult(s, log, backend, dataset, out_dir)


# --------------------------------------------------------------------------------------------
# command line


@dataclass(frozen=True)
class SampleSettings:
    ckpt: str = "out/best.pt"
    num_samples: int = 20
    temperature: float = 0.8
    top_k: int = 0
    seed: int = 42
    device: str = "cpu"
    use_cache: bool = True


USAGE = """usage: python -m microgpt_lib.train [--preset=names|microgpt] [--key=value ...]
       python -m microgpt_lib.train sample [--ckpt=out/best.pt] [--key=value ...]
       torchrun --nproc_per_node N -m microgpt_lib.train [--key=value ...]

settings (train):
{train}
settings (sample):
{sample}"""


def usage() -> str:
    def table(cls: type) -> str:
        return "\n".join(
            f"  --{f.name}={f.default!r}  ({f.type})" for f in dataclasses.fields(cls)
        )

    return USAGE.format(train=table(TrainSettings), sample=table(SampleSettings))


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return None
    try:
        if argv[:1] == ["sample"]:
            opts = SampleSettings(**parse_overrides(argv[1:], SampleSettings))
            model, tokenizer = model_from_checkpoint(opts.ckpt, opts.device)
            names = sample_names(
                model,
                tokenizer,
                opts.num_samples,
                opts.temperature,
                opts.top_k,
                opts.seed,
                opts.use_cache,
            )
            for i, name in enumerate(names, start=1):
                print(f"sample {i:2d}: {name}")
            return names
        settings = settings_from(argv)
        result = train(settings, progress=sys.stderr.isatty())
    except (
        ValueError,
        TypeError,
        OSError,
        NonFiniteLossError,
        devices.DeviceUnavailableError,
    ) as error:
        raise SystemExit(f"error: {error}") from None
    if rank() == 0:
        names = sample_names(result.torch_model(), result.dataset.tokenizer, 10)
        for i, name in enumerate(names, start=1):
            print(f"sample {i:2d}: {name}")
    return result


if __name__ == "__main__":
    from .bench import run_command_line

    run_command_line(main)
