"""microgpt_lib.gpt: the matrix GPT against chapter 02's scalar GPT, batching, training, CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest

from microgpt_lib import gpt, optim, scalar_gpt
from microgpt_lib.config import GPTConfig, TrainConfig, init_weights
from microgpt_lib.tensor import Tensor

CONFIGS = [
    {},
    {"n_layer": 2},
    {"n_layer": 2, "n_embd": 8, "n_head": 2},
    {
        "n_embd": 12,
        "n_head": 3,
        "block_size": 5,
    },  # names longer than 5 are cut, as microgpt
]


def scalar_loss_and_grads(config, weights, tokens):
    model = scalar_gpt.ScalarGPT.from_weights(config, weights)
    loss = scalar_gpt.document_loss(model, tokens)
    loss.backward()
    return loss.data, np.array(model.gradients())


def flat_grads(model: gpt.MatrixGPT) -> np.ndarray:
    return np.concatenate([p.grad.ravel() for p in model.parameters()])


@pytest.mark.parametrize("overrides", CONFIGS)
def test_same_weights_same_loss_and_gradients_as_the_scalar_gpt(overrides, tokenizer):
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **overrides)
    weights = init_weights(config, 7)
    for name in ("emma", "christopher", "x"):
        tokens = tokenizer.encode_document(name)
        want_loss, want_grads = scalar_loss_and_grads(config, weights, tokens)
        model = gpt.MatrixGPT.from_weights(config, weights)
        out = gpt.loss(model, gpt.make_batch([tokens], config))
        out.backward()
        assert abs(out.item() - want_loss) < 1e-9
        np.testing.assert_allclose(flat_grads(model), want_grads, rtol=1e-9, atol=1e-9)


def test_a_batch_is_the_token_weighted_mean_of_its_documents(tokenizer):
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2)
    weights = init_weights(config, 3)
    docs = [tokenizer.encode_document(n) for n in ("ava", "maximilian", "bo")]
    counts = [min(config.block_size, len(d) - 1) for d in docs]
    scalar = [scalar_loss_and_grads(config, weights, d) for d in docs]
    want_loss = sum(n * loss for n, (loss, _) in zip(counts, scalar)) / sum(counts)
    want_grads = sum(n * g for n, (_, g) in zip(counts, scalar)) / sum(counts)
    model = gpt.MatrixGPT.from_weights(config, weights)
    out = gpt.loss(model, gpt.make_batch(docs, config))
    out.backward()
    assert abs(out.item() - want_loss) < 1e-9
    np.testing.assert_allclose(flat_grads(model), want_grads, rtol=1e-9, atol=1e-9)


def test_padding_and_the_loss_mask_change_nothing_for_real_tokens(tokenizer, config):
    model = gpt.MatrixGPT.init(config, 1)
    short = tokenizer.encode_document("li")
    alone = gpt.make_batch([short], config)
    logits_alone = gpt.forward(model, alone.idx).data[0]
    results = []
    for pad in (0, 5, tokenizer.bos):
        batch = gpt.make_batch(
            [short, tokenizer.encode_document("alexandria")], config, pad
        )
        assert batch.mask[0].sum() == len(short) - 1 and batch.idx.shape == (2, 11)
        logits = gpt.forward(model, batch.idx).data[0, : len(short) - 1]
        np.testing.assert_allclose(logits, logits_alone, rtol=1e-12, atol=1e-13)
        only_short = gpt.Batch(batch.idx[:1], batch.targets[:1], batch.mask[:1])
        model.zero_grad()
        out = gpt.loss(model, only_short)
        out.backward()
        results.append((out.item(), flat_grads(model)))
    model.zero_grad()
    gpt.loss(model, alone).backward()
    for value, grads in results:
        assert abs(value - results[0][0]) < 1e-13
        np.testing.assert_allclose(grads, flat_grads(model), rtol=1e-11, atol=1e-13)


def test_float32_model_agrees_with_float64(tokenizer, config):
    weights = init_weights(config, 2)
    batch = gpt.make_batch([tokenizer.encode_document("sophia")], config)
    losses = {}
    for dtype in ("float64", "float32"):
        model = gpt.MatrixGPT.from_weights(config, weights, dtype)
        out = gpt.loss(model, batch)
        out.backward()
        assert out.dtype == dtype and model.params.wte.grad.dtype == dtype
        losses[dtype] = (out.item(), flat_grads(model))
    assert abs(losses["float32"][0] - losses["float64"][0]) < 1e-5
    np.testing.assert_allclose(losses["float32"][1], losses["float64"][1], atol=1e-5)


def test_training_follows_the_scalar_gpt_curve(names, tokenizer, config):
    """chapter 08's Adam computes microgpt's update in torch's order: equal to rounding."""
    steps = 25
    recipe = TrainConfig(steps=steps)
    model, order, _ = gpt.start_run(names, config)
    scalar, scalar_order, _ = scalar_gpt.start_run(names, config)
    assert order == scalar_order
    assert all(
        np.array_equal(a.data, np.array(b))
        for (_, a), (_, b) in zip(
            model.named_parameters(), scalar.weights().named_parameters()
        )
    )
    ours = gpt.train(model, order, tokenizer, recipe).losses
    theirs = scalar_gpt.train(scalar, order, tokenizer, recipe).losses
    assert ours[0] == pytest.approx(theirs[0], abs=1e-12)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    ours_w = np.concatenate([p.data.ravel() for p in model.parameters()])
    theirs_w = np.concatenate(
        [np.ravel(m) for _, m in scalar.weights().named_parameters()]
    )
    np.testing.assert_allclose(ours_w, theirs_w, rtol=0, atol=1e-9)


def test_adamw_and_batches_train(names, tokenizer, config):
    model, order, _ = gpt.start_run(names, config, dtype="float32")
    opt = optim.AdamW(
        model.named_parameters(), lr=0.01, betas=(0.85, 0.99), weight_decay=0.01
    )
    source = gpt.batches(order, tokenizer, config, 8)
    losses = [gpt.train_step(model, opt, next(source), 0.01).loss for _ in range(30)]
    assert np.mean(losses[-5:]) < losses[0] - 0.3


def test_sampling_matches_the_scalar_gpt(tokenizer, config):
    weights = init_weights(config, 5)
    model = gpt.MatrixGPT.from_weights(config, weights)
    scalar = scalar_gpt.ScalarGPT.from_weights(config, weights)
    assert gpt.sample(model, tokenizer, 6, 0.8, 9) == scalar_gpt.sample(
        scalar, tokenizer, 6, 0.8, 9
    )
    assert not any(p.grad.any() for p in model.parameters())  # sampling builds no graph


def test_the_command_line_prints_a_line_per_step(tmp_path, capsys):
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\nisabella\nsophia\n")
    gpt.main(["--steps", "4", "--data", str(data), "--samples", "2", "--batch", "2"])
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step")]
    assert len(steps) == 4
    for i, line in enumerate(steps, start=1):
        assert re.fullmatch(
            rf"step +{i} / 4 \| loss \d+\.\d{{4}} \| \d+\.\d+ ms", line
        ), line
    assert any(
        re.fullmatch(r"median \d+\.\d+ ms per step \(tensor, batch 2\)", x) for x in lines
    )
    assert sum(x.startswith("sample") for x in lines) == 2


def test_the_command_line_rejects_bad_options(capsys):
    for argv in (["--batch", "0"], ["--dtype", "float16"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            gpt.main(argv)
    assert "--batch must be >= 1" in capsys.readouterr().err


def test_bad_inputs_get_clear_errors(tokenizer, config):
    model = gpt.MatrixGPT.init(config)
    with pytest.raises(ValueError, match=r"token id 99 is not in \[0, 27\)"):
        gpt.forward(model, np.array([[0, 99]]))
    with pytest.raises(ValueError, match="17 positions, but the model has block_size 16"):
        gpt.forward(model, np.zeros((1, 17), int))
    with pytest.raises(ValueError, match=r"\(B, T\) integer array"):
        gpt.forward(model, np.zeros(3))
    with pytest.raises(ValueError, match="token ids must be ints"):
        gpt.make_batch([[26, 30, 26]], config)
    with pytest.raises(ValueError, match="at least 2"):
        gpt.make_batch([[26]], config)
    weights = init_weights(config)
    weights.wte = weights.wte[:-1]
    with pytest.raises(ValueError, match=r"weights\['wte'\] is \(26, 16\)"):
        gpt.MatrixGPT.from_weights(config, weights)
    with pytest.raises(ValueError, match="layers"):
        gpt.MatrixGPT.from_weights(
            GPTConfig(vocab_size=27, n_layer=2), init_weights(config)
        )
    with pytest.raises(ValueError, match="dtype must be one of"):
        gpt.MatrixGPT.init(config, dtype="float16")
    mixed = gpt.MatrixGPT.init(config)
    mixed.params.wpe = Tensor(mixed.params.wpe.data.astype(np.float32))
    with pytest.raises(TypeError, match="dtypes differ"):
        gpt.forward(mixed, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="batch size"):
        next(gpt.batches(["ab"], tokenizer, config, 0))
    with pytest.raises(ValueError, match="temperature"):
        gpt.sample(model, tokenizer, 1, 0)


# --------------------------------------------------------------------------------------------
# the faster rungs: the same numbers as the Tensor step


@pytest.mark.parametrize("overrides", CONFIGS)
def test_fused_and_compiled_gradients_equal_the_tensor_graph(overrides, tokenizer):
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **overrides)
    weights = init_weights(config, 11)
    names = ("emma", "christopher", "x")
    reference = gpt.MatrixGPT.from_weights(config, weights)
    fused = gpt.MatrixGPT.from_weights(config, weights)
    compiled = gpt.MatrixGPT.from_weights(config, weights)
    gpt.make_optimizer(compiled)
    data, grad = gpt.flat_buffers(compiled)
    batch = gpt.make_batch([tokenizer.encode_document(n) for n in names], config)
    out = gpt.loss(reference, batch)
    out.backward()
    assert abs(gpt.fused_loss_and_grads(fused, batch) - out.item()) < 1e-12
    np.testing.assert_allclose(flat_grads(fused), flat_grads(reference), atol=1e-13)
    for name in names:  # the compiled step: one document at a time
        one = gpt.make_batch([tokenizer.encode_document(name)], config)
        reference.zero_grad()
        grad[:] = 0.0
        out = gpt.loss(reference, one)
        out.backward()
        n = one.tokens
        value = gpt.compiled_loss_and_grads(
            data, grad, one.idx[0, :n], one.targets[0, :n], config.vocab_size,
            config.block_size, config.n_embd, config.n_head, config.n_layer,
            config.norm_eps,
        )  # fmt: skip
        assert abs(value - out.item()) < 1e-12
        np.testing.assert_allclose(grad, flat_grads(reference), atol=1e-13)


@pytest.mark.parametrize("impl", ["fused", "compiled"])
def test_training_with_a_faster_step_gives_the_same_curve(impl, names, tokenizer, config):
    recipe = TrainConfig(steps=20)
    runs = {}
    for name in ("tensor", impl):
        model, order, _ = gpt.start_run(names, config)
        runs[name] = gpt.train(
            model, order, tokenizer, recipe, step_fn=gpt.IMPLEMENTATIONS[name]
        ).losses
    np.testing.assert_allclose(runs[impl], runs["tensor"], rtol=0, atol=1e-12)


def test_the_faster_steps_refuse_what_they_cannot_do(tokenizer, config):
    model = gpt.MatrixGPT.init(config)
    opt = optim.Adam(model.named_parameters())  # not flattened
    one = gpt.make_batch([tokenizer.encode_document("ada")], config)
    with pytest.raises(ValueError, match="one flat buffer"):
        gpt.compiled_step(model, opt, one, 0.01)
    two = gpt.make_batch([tokenizer.encode_document(n) for n in ("ada", "bo")], config)
    with pytest.raises(ValueError, match="one document, got a batch of 2"):
        gpt.compiled_step(model, gpt.make_optimizer(model), two, 0.01)
    small = gpt.MatrixGPT.init(config, dtype="float32")
    with pytest.raises(TypeError, match="float64 only"):
        gpt.compiled_step(small, gpt.make_optimizer(small), one, 0.01)
    # fused works in float32 too, and stays float32
    assert small.params.wte.grad.dtype == np.float32
    gpt.fused_step(small, gpt.make_optimizer(small), two, 0.01)
    assert small.params.wte.data.dtype == np.float32


def test_the_command_line_runs_the_compiled_step(tmp_path, capsys):
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\n")
    gpt.main(
        ["--steps", "3", "--data", str(data), "--samples", "0", "--impl", "compiled"]
    )
    out = capsys.readouterr().out
    assert "impl compiled" in out and "ms per step (compiled, batch 1)" in out


def test_flat_buffers_follow_the_parameters(config):
    model = gpt.MatrixGPT.init(config)
    gpt.make_optimizer(model)
    first, _ = gpt.flat_buffers(model)
    assert gpt.flat_buffers(model)[0] is first  # found once, then only checked
    optim.flatten_(model.named_parameters())  # new buffers: the old ones are stale
    data, grad = gpt.flat_buffers(model)
    assert data is not first and np.shares_memory(data, model.params.wte.data)
    assert np.shares_memory(grad, model.params.lm_head.grad)
    model.params.wpe = Tensor(model.params.wpe.data.copy())  # no longer in the buffer
    with pytest.raises(ValueError, match="one flat buffer"):
        gpt.flat_buffers(model)
