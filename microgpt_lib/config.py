"""The GPT's shape, its training recipe, and a named container for its weights.

    GPTConfig       vocab_size, block_size, n_layer, n_embd, n_head (+ init_std, norm_eps)
    TrainConfig     steps, Adam's lr / beta1 / beta2 / eps, seed: microgpt's recipe by default
    GPTParams[M]    the weight matrices by name, generic over what a matrix is
    LayerParams[M]  one transformer layer's six matrices
    param_shapes(config), init_weights(config, seed or generator)

The defaults are Karpathy's microgpt: one layer, 16-wide embeddings, 4 heads, a context of
16 characters, weights drawn from N(0, 0.08), Adam (0.01, 0.85, 0.99, 1e-8), 1,000 steps.

The container does not care what a "matrix" is: chapter 02 fills it with lists of lists of
scalar ``Value``s, a later chapter with numpy arrays. ``named_parameters()`` fixes one
iteration order (microgpt's: wte, wpe, lm_head, then each layer's attn_wq, attn_wk, attn_wv,
attn_wo, mlp_fc1, mlp_fc2), so flattening, initialising, saving and comparing all agree on it.
Every matrix is stored (rows, columns) = (outputs, inputs), as ``y = W x`` reads.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

M = TypeVar(
    "M"
)  # whatever holds one matrix: list[list[Value]], np.ndarray, a shape tuple, ...
N = TypeVar("N")


def _check_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int in Python; GPTConfig(n_layer=True) is a mistake, not one layer
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_float(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = True,
    high_open: bool = True,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")


@dataclass(frozen=True)
class GPTConfig:
    """The shape of the model. Frozen: a config is a value, safe to share and compare."""

    vocab_size: int
    block_size: int = 16  # the longest context, in tokens
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    init_std: float = 0.08  # weights ~ N(0, init_std)
    norm_eps: float = 1e-5  # RMSNorm: x / sqrt(mean(x^2) + eps)

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, 2)  # at least one character and BOS
        _check_int("block_size", self.block_size, 1)
        _check_int("n_layer", self.n_layer, 1)
        _check_int("n_embd", self.n_embd, 1)
        _check_int("n_head", self.n_head, 1)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd // n_head dimensions"
            )
        _check_float("init_std", self.init_std, 0.0, math.inf, low_open=False)
        _check_float("norm_eps", self.norm_eps, 0.0, math.inf, low_open=False)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """The MLP widens each position 4x, then projects back (GPT-2's ratio)."""
        return 4 * self.n_embd

    def num_params(self) -> int:
        return sum(
            rows * cols for _, (rows, cols) in param_shapes(self).named_parameters()
        )


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: Adam with a learning rate that decays linearly to zero."""

    steps: int = 1000
    lr: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps: float = 1e-8
    seed: int = 42

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 1)
        _check_float("lr", self.lr, 0.0, math.inf)
        _check_float("beta1", self.beta1, 0.0, 1.0, low_open=False)
        _check_float("beta2", self.beta2, 0.0, 1.0, low_open=False)
        _check_float("eps", self.eps, 0.0, math.inf)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(
                f"seed must be an int, got {type(self.seed).__name__} {self.seed!r}"
            )

    def lr_at(self, step: int) -> float:
        """microgpt's schedule: lr * (1 - step / steps), step counted from 0."""
        return self.lr * (1 - step / self.steps)


@dataclass
class LayerParams(Generic[M]):
    """One transformer layer: attention (query, key, value, output) and the MLP (up, down)."""

    attn_wq: M
    attn_wk: M
    attn_wv: M
    attn_wo: M
    mlp_fc1: M
    mlp_fc2: M

    def named_parameters(self) -> Iterator[tuple[str, M]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)


@dataclass
class GPTParams(Generic[M]):
    """Every weight matrix of the model, by name; ``M`` is the matrix type."""

    wte: M  # token embeddings: one row per token id (vocab_size x n_embd)
    wpe: M  # position embeddings: one row per position (block_size x n_embd)
    lm_head: M  # hidden state -> one logit per token (vocab_size x n_embd)
    layers: list[LayerParams[M]]

    def named_parameters(self) -> Iterator[tuple[str, M]]:
        """("wte", W), ("wpe", W), ("lm_head", W), ("layers.0.attn_wq", W), ...: the one order."""
        yield "wte", self.wte
        yield "wpe", self.wpe
        yield "lm_head", self.lm_head
        for i, layer in enumerate(self.layers):
            for name, matrix in layer.named_parameters():
                yield f"layers.{i}.{name}", matrix

    def names(self) -> list[str]:
        return [name for name, _ in self.named_parameters()]

    def map(self, fn: Callable[[M], N]) -> GPTParams[N]:
        """The same layout with ``fn`` applied to every matrix (e.g. to numpy, to shapes)."""
        return GPTParams.from_matrices(fn(m) for _, m in self.named_parameters())  # type: ignore[return-value]

    @classmethod
    def from_matrices(cls, matrices: Iterable[M]) -> GPTParams[M]:
        """Rebuild a container from matrices listed in ``named_parameters()`` order."""
        items = list(matrices)
        per_layer = len(fields(LayerParams))
        if len(items) < 3 or (len(items) - 3) % per_layer:
            raise ValueError(
                f"expected 3 + {per_layer} * n_layer matrices, got {len(items)}"
            )
        layers = [
            LayerParams(*items[i : i + per_layer])
            for i in range(3, len(items), per_layer)
        ]
        return cls(items[0], items[1], items[2], layers)


def param_shapes(config: GPTConfig) -> GPTParams[tuple[int, int]]:
    """The (rows, columns) of every matrix the config implies."""
    d, h = config.n_embd, config.mlp_hidden
    return GPTParams(
        wte=(config.vocab_size, d),
        wpe=(config.block_size, d),
        lm_head=(config.vocab_size, d),
        layers=[
            LayerParams((d, d), (d, d), (d, d), (d, d), (h, d), (d, h))
            for _ in range(config.n_layer)
        ],
    )


def init_weights(
    config: GPTConfig, seed: int | random.Random = 42
) -> GPTParams[list[list[float]]]:
    """Initial weights as plain floats, ~ N(0, init_std), drawn matrix by matrix, row by row.

    One ``gauss`` draw per weight, in ``named_parameters()`` order (wte, wpe, lm_head, then each
    layer's six matrices): microgpt's order, so every chapter, whatever its matrix type, starts
    from exactly the same numbers. ``seed`` is an int (a fresh ``random.Random(seed)``) or a
    generator to draw from: microgpt draws its weights right after shuffling the documents,
    from the same stream (``scalar_gpt.start_run`` does both).
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    std = config.init_std
    return param_shapes(config).map(
        lambda shape: [
            [rng.gauss(0.0, std) for _ in range(shape[1])] for _ in range(shape[0])
        ]
    )
