"""GPTConfig and TrainConfig validation, the GPTParams container, seeded initial weights."""

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_lib.config import (
    GPTConfig,
    GPTParams,
    LayerParams,
    TrainConfig,
    init_weights,
    param_shapes,
)


def test_defaults_are_microgpt():
    config = GPTConfig(vocab_size=27)
    assert (config.block_size, config.n_layer, config.n_embd, config.n_head) == (
        16,
        1,
        16,
        4,
    )
    assert config.head_dim == 4 and config.mlp_hidden == 64
    assert config.init_std == 0.08
    assert config.num_params() == 4192  # microgpt's count
    recipe = TrainConfig()
    assert (
        recipe.steps,
        recipe.lr,
        recipe.beta1,
        recipe.beta2,
        recipe.eps,
        recipe.seed,
    ) == (1000, 0.01, 0.85, 0.99, 1e-8, 42)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(n_embd=16, n_head=3),
            ValueError,
            r"n_embd \(16\) must be divisible by n_head \(3\)",
        ),
        (dict(n_embd=0), ValueError, "n_embd must be >= 1, got 0"),
        (dict(n_head=-2), ValueError, "n_head must be >= 1, got -2"),
        (dict(n_layer=0), ValueError, "n_layer must be >= 1"),
        (dict(block_size=0), ValueError, "block_size must be >= 1, got 0"),
        (dict(block_size=-5), ValueError, "block_size must be >= 1"),
        (dict(vocab_size=1), ValueError, "vocab_size must be >= 2"),
        (dict(n_embd=16.0), TypeError, "n_embd must be an int, got float"),
        (dict(n_layer=True), TypeError, "n_layer must be an int, got bool"),
        (dict(block_size="16"), TypeError, "block_size must be an int"),
        (dict(init_std=-0.1), ValueError, "init_std must be in"),
        (dict(norm_eps=math.nan), ValueError, "norm_eps must be in"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        GPTConfig(**{"vocab_size": 27, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be >= 1"),
        (dict(lr=0.0), "lr must be in"),
        (dict(beta1=1.0), "beta1 must be in"),
        (dict(beta2=-0.1), "beta2 must be in"),
        (dict(eps=0), "eps must be in"),
    ],
)
def test_bad_recipes_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)
    with pytest.raises(TypeError, match="seed must be an int"):
        TrainConfig(seed=1.5)


def test_configs_are_frozen_values():
    config = GPTConfig(vocab_size=27)
    assert config == GPTConfig(vocab_size=27) and hash(config) == hash(
        GPTConfig(vocab_size=27)
    )
    with pytest.raises(AttributeError):
        config.n_embd = 32  # type: ignore[misc]


def test_learning_rate_decays_linearly_to_zero():
    recipe = TrainConfig(steps=1000, lr=0.01)
    assert recipe.lr_at(0) == 0.01
    assert recipe.lr_at(500) == pytest.approx(0.005)
    assert recipe.lr_at(999) == pytest.approx(1e-5)


def test_named_parameters_have_one_fixed_order_and_survive_a_round_trip():
    shapes = param_shapes(GPTConfig(vocab_size=27, n_layer=2))
    names = shapes.names()
    assert names[:3] == ["wte", "wpe", "lm_head"]
    assert names[3:9] == [
        f"layers.0.{n}"
        for n in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")
    ]
    assert names[9] == "layers.1.attn_wq" and len(names) == 15
    assert dict(shapes.named_parameters())["layers.1.mlp_fc1"] == (64, 16)
    assert dict(shapes.named_parameters())["wpe"] == (16, 16)
    rebuilt = GPTParams.from_matrices(m for _, m in shapes.named_parameters())
    assert rebuilt == shapes
    assert shapes.map(lambda s: s[0] * s[1]).names() == names  # map keeps the layout
    assert isinstance(rebuilt.layers[1], LayerParams)
    with pytest.raises(ValueError, match="expected 3 \\+ 6 \\* n_layer matrices, got 5"):
        GPTParams.from_matrices(range(5))


def test_initial_weights_are_seeded_and_scaled():
    config = GPTConfig(vocab_size=27)
    weights = init_weights(config, seed=42)
    assert weights == init_weights(config, seed=42)
    assert weights != init_weights(config, seed=43)
    for (name, matrix), (_, (rows, cols)) in zip(
        weights.named_parameters(), param_shapes(config).named_parameters()
    ):
        assert len(matrix) == rows and all(len(row) == cols for row in matrix), name
    flat = [w for _, m in weights.named_parameters() for row in m for w in row]
    assert len(flat) == 4192
    assert abs(statistics.fmean(flat)) < 0.01
    assert statistics.pstdev(flat) == pytest.approx(0.08, rel=0.05)


def test_initial_weights_can_continue_a_stream():
    config = GPTConfig(vocab_size=5, n_embd=4, n_head=2)
    assert init_weights(config, random.Random(7)) == init_weights(config, 7)
    rng = random.Random(7)
    rng.random()  # something drew first (microgpt: the shuffle)
    first = init_weights(config, rng)
    assert first != init_weights(config, 7)
    # one gauss per weight, in named_parameters() order, row by row
    rng = random.Random(7)
    rng.random()
    flat = [w for _, m in first.named_parameters() for row in m for w in row]
    assert flat == [rng.gauss(0.0, 0.08) for _ in range(config.num_params())]


@settings(max_examples=40, deadline=None)
@given(
    vocab=st.integers(2, 60),
    block=st.integers(1, 40),
    layers=st.integers(1, 3),
    n_head=st.integers(1, 4),
    head_dim=st.integers(1, 6),
)
def test_parameter_count_matches_the_shapes(vocab, block, layers, n_head, head_dim):
    d = n_head * head_dim
    config = GPTConfig(
        vocab_size=vocab, block_size=block, n_layer=layers, n_embd=d, n_head=n_head
    )
    # two vocab x d tables, the positions, and per layer 4 d x d attention + 2 d x 4d MLP matrices
    assert config.num_params() == 2 * vocab * d + block * d + layers * (
        4 * d * d + 8 * d * d
    )
    weights = init_weights(config, seed=0)
    assert weights.map(lambda m: (len(m), len(m[0]))) == param_shapes(config)
