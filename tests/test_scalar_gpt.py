"""microgpt on Values: the plain and the fused step agree, training learns, sampling is seeded."""

import gc
import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_lib import scalar_gpt as sg
from microgpt_lib.autograd import Value, check_gradients
from microgpt_lib.config import GPTConfig, GPTParams, TrainConfig, init_weights
from microgpt_lib.data import CharTokenizer, shuffled
from microgpt_lib.scalar_gpt_lab import PHASES

TOL = 1e-9


def test_the_model_is_microgpt(config):
    model = sg.ScalarGPT.init(config, seed=42)
    assert config.vocab_size == 27 and len(model.parameters()) == 4192
    assert model.weights() == init_weights(
        config, 42
    )  # Values wrap exactly the seeded floats
    assert len({id(p) for p in model.parameters()}) == 4192  # every weight its own leaf


def test_plain_and_fast_steps_agree_on_losses_and_every_gradient(
    config, tokenizer, names
):
    plain, fast = sg.ScalarGPT.init(config, 7), sg.ScalarGPT.init(config, 7)
    recipe = TrainConfig(steps=4)
    opt_plain, opt_fast = (
        sg.make_optimizer(plain, recipe),
        sg.make_optimizer(fast, recipe),
    )
    docs = shuffled(names, 3)[:3] + [
        "christopherjonathan"
    ]  # the last is longer than block_size
    for step, doc in enumerate(docs):
        tokens = tokenizer.encode_document(doc)
        loss_plain, loss_fast = (
            sg.document_loss(plain, tokens, sg.PLAIN),
            sg.document_loss(fast, tokens, sg.FAST),
        )
        assert loss_fast.data == pytest.approx(loss_plain.data, abs=TOL), doc
        loss_plain.backward()
        loss_fast.backward()
        grads_plain, grads_fast = plain.gradients(), fast.gradients()
        worst = max(abs(a - b) for a, b in zip(grads_plain, grads_fast))
        assert worst < TOL, f"step {step} ({doc}): gradients differ by {worst:.3g}"
        assert (
            sum(g != 0.0 for g in grads_fast) > 1000
        )  # the check compares real gradients
        opt_plain.step(recipe.lr_at(step))
        opt_fast.step(recipe.lr_at(step))
        assert all(p.grad == 0.0 for p in fast.parameters())  # Adam zeroes what it used
    worst = max(
        abs(a.data - b.data) for a, b in zip(plain.parameters(), fast.parameters())
    )
    assert worst < TOL


def _random_vector(rng, n):
    return [rng.uniform(-2, 2) for _ in range(n)]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), t=st.integers(1, 6))
def test_each_fused_block_matches_its_plain_twin(seed, n, t):
    rng = random.Random(seed)
    target = rng.randrange(n)
    blocks = [
        (
            "linear",
            lambda v: sg.linear(v[:n], [v[n : 2 * n], v[2 * n :]]),
            lambda v: sg.linear_fused(v[:n], [v[n : 2 * n], v[2 * n :]]),
            3 * n,
        ),
        (
            "rmsnorm",
            lambda v: sg.rmsnorm(v, 1e-5),
            lambda v: sg.rmsnorm_fused(v, 1e-5),
            n,
        ),
        (
            "attention",
            lambda v: sg.attention_head(*_split_head(v, n, t)),
            lambda v: sg.attention_head_fused(*_split_head(v, n, t)),
            n + 2 * n * t,
        ),
        (
            "cross_entropy",
            lambda v: [sg.cross_entropy(v, target)],
            lambda v: [sg.cross_entropy_fused(v, target)],
            n,
        ),
        ("mean", lambda v: [sg.mean(v)], lambda v: [sg.mean_fused(v)], n),
    ]
    for name, plain, fused, size in blocks:
        data = _random_vector(rng, size)
        weights = _random_vector(
            rng, n
        )  # a random weighting turns the outputs into one scalar
        results = []
        for block in (plain, fused):
            xs = [Value(x) for x in data]
            outs = block(xs)
            total = sum(w * o for w, o in zip(weights, outs))
            total.backward()
            results.append(([o.data for o in outs], [x.grad for x in xs]))
        (out_p, grad_p), (out_f, grad_f) = results
        assert out_f == pytest.approx(out_p, abs=1e-12), name
        assert grad_f == pytest.approx(grad_p, abs=1e-12), name


def _split_head(v, d, t):
    q = v[:d]
    keys = [v[d + i * d : d + (i + 1) * d] for i in range(t)]
    values = [v[d + (t + i) * d : d + (t + i + 1) * d] for i in range(t)]
    return q, keys, values


def test_fused_blocks_pass_finite_differences():
    rng = random.Random(0)
    d, t = 4, 3
    x = _random_vector(rng, d + 2 * d * t)
    check_gradients(
        lambda v: sum(
            o * (i + 1)
            for i, o in enumerate(sg.attention_head_fused(*_split_head(v, d, t)))
        ),
        x,
    )
    check_gradients(
        lambda v: sum(o * (i - 2) for i, o in enumerate(sg.rmsnorm_fused(v, 1e-5))), x[:6]
    )
    check_gradients(lambda v: sg.cross_entropy_fused(v, 2), x[:5])


def test_step_zero_loss_is_about_ln_vocab(config, tokenizer, names):
    model = sg.ScalarGPT.init(config, 42)
    losses = [
        sg.document_loss(model, tokenizer.encode_document(doc)).data
        for doc in shuffled(names, 42)[:20]
    ]
    # small random weights: nearly uniform predictions, so the loss is close to ln(27) = 3.30
    assert sum(losses) / len(losses) == pytest.approx(
        math.log(config.vocab_size), abs=0.15
    )
    assert all(abs(loss - math.log(config.vocab_size)) < 0.6 for loss in losses)


def test_a_short_run_lowers_the_loss_and_same_seed_gives_same_numbers(
    config, tokenizer, names
):
    recipe = TrainConfig(steps=80, seed=5)
    runs = []
    for _ in range(2):
        model, order, _ = sg.start_run(names, config, recipe.seed)
        log = sg.train(model, order, tokenizer, recipe)
        runs.append(
            (log.losses, sg.sample(model, tokenizer, count=8, temperature=0.5, seed=1))
        )
    losses, samples = runs[0]
    assert (
        runs[1] == runs[0]
    )  # checkpoint-free determinism: same seed, same losses, same names
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.3, (
        f"mean loss {first:.3f} over the first 20 steps, {last:.3f} over the last 20"
    )
    assert len(samples) == 8 and all(set(s) <= set(tokenizer.chars) for s in samples)
    assert all(len(s) <= config.block_size for s in samples)
    assert sg.sample(model, tokenizer, count=8, temperature=0.5, seed=2) != samples


def test_start_run_draws_from_one_stream_shuffle_first(config, names):
    model, order, rng = sg.start_run(names, config, 42)
    stream = random.Random(42)
    assert order == shuffled(names, stream)  # the shuffle takes the first draws...
    assert model.weights() == init_weights(config, stream)  # ...then every weight
    assert rng.getstate() == stream.getstate()  # and sampling goes on from there
    assert model.weights() != init_weights(config, 42)  # not a fresh stream's weights


def test_command_line_follows_microgpts_random_order(tmp_path, capsys):
    docs = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia"]
    data = tmp_path / "names.txt"
    data.write_text("\n".join(docs) + "\n")
    argv = ["--data", str(data), "--steps", "5", "--seed", "42", "--samples", "4"]
    for impl in ("plain", "fast"):
        log = sg.main([*argv, "--impl", impl])
        out = capsys.readouterr().out.splitlines()
        printed = [line.split("loss ")[1].split()[0] for line in out if "| loss" in line]
        samples = [line.split(": ", 1)[1] for line in out if line.startswith("sample")]

        # microgpt.py's start, by hand: random.seed(42), random.shuffle(docs), then one
        # random.gauss(0, 0.08) per weight: wte, wpe, lm_head, attn_wq/wk/wv/wo, mlp_fc1/fc2
        rng = random.Random(42)
        order = list(docs)
        rng.shuffle(order)
        chars = sorted(set("".join(docs)))
        bos, vocab = len(chars), len(chars) + 1
        shapes = [(vocab, 16), (16, 16), (vocab, 16), *[(16, 16)] * 4, (64, 16), (16, 64)]
        matrices = [
            [[rng.gauss(0, 0.08) for _ in range(cols)] for _ in range(rows)]
            for rows, cols in shapes
        ]
        model = sg.ScalarGPT.from_weights(
            GPTConfig(vocab_size=vocab), GPTParams.from_matrices(matrices)
        )
        recipe = TrainConfig(steps=5)
        opt = sg.make_optimizer(model, recipe)
        expected = []
        for step in range(recipe.steps):
            doc = order[step % len(order)]
            loss = sg.document_loss(
                model, [bos, *[chars.index(c) for c in doc], bos], impl
            )
            loss.backward()
            opt.step(recipe.lr_at(step))
            expected.append(loss.data)
        assert printed == [f"{x:.4f}" for x in expected], impl
        assert log.losses == pytest.approx(expected, abs=TOL), impl
        tokenizer = CharTokenizer("".join(chars))
        assert samples == sg.sample(model, tokenizer, 4, 0.5, rng), impl  # same stream


def test_sampling_continues_a_generator_or_starts_one_from_a_seed(config, tokenizer):
    model = sg.ScalarGPT.init(config, 3)
    assert sg.sample(model, tokenizer, 5, seed=9) == sg.sample(
        model, tokenizer, 5, seed=random.Random(9)
    )
    rng = random.Random(9)
    first, second = (
        sg.sample(model, tokenizer, 5, seed=rng),
        sg.sample(model, tokenizer, 5, seed=rng),
    )
    assert first + second == sg.sample(model, tokenizer, 10, seed=9)


def test_train_step_reports_every_phase(config, tokenizer):
    model = sg.ScalarGPT.init(config)
    stats = sg.train_step(
        model,
        sg.make_optimizer(model),
        tokenizer.encode_document("anna"),
        0.01,
        "fast",
    )
    assert all(getattr(stats, f"{phase}_s") > 0 for phase in PHASES)
    assert stats.total_s == pytest.approx(sum(getattr(stats, f"{p}_s") for p in PHASES))
    assert gc.isenabled()  # the fast step paused the collector and switched it back on


def test_bad_inputs_raise_clear_errors(config, tokenizer):
    model = sg.ScalarGPT.init(config)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sg.document_loss(model, [tokenizer.bos])
    with pytest.raises(ValueError, match=r"token ids must be ints in \[0, 27\), got 27"):
        sg.document_loss(model, [26, 27])
    with pytest.raises(ValueError, match="impl must be one of plain, fast, got 'numpy'"):
        sg.document_loss(model, [26, 0, 26], "numpy")
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        sg.sample(model, tokenizer, temperature=0)
    small = CharTokenizer.from_documents(["abc"])
    with pytest.raises(ValueError, match="the tokenizer has 4 tokens, the model 27"):
        sg.sample(model, small)
    with pytest.raises(ValueError, match="count must be an int >= 0"):
        sg.sample(model, tokenizer, count=-1)
    with pytest.raises(ValueError, match="the tokenizer has 4 tokens"):
        sg.train(model, ["abc"], small, TrainConfig(steps=1))
    wrong = init_weights(GPTConfig(vocab_size=27, n_embd=8, n_head=2))
    with pytest.raises(ValueError, match=r"weights\['wte'\] should be 27 x 16"):
        sg.ScalarGPT.from_weights(config, wrong)


def test_command_line_trains_and_samples(tmp_path, capsys):
    data = tmp_path / "words.txt"
    data.write_text("abba\nbaab\nab\nba\n")
    log = sg.main(
        [
            "--steps",
            "3",
            "--data",
            str(data),
            "--samples",
            "2",
            "--seed",
            "1",
            "--impl",
            "plain",
        ]
    )
    out = capsys.readouterr().out
    assert "4 documents | vocabulary 3 |" in out and "impl plain" in out
    assert "step    3 / 3 | loss" in out and "ms per step (plain)" in out
    assert "sample  2:" in out and len(log.losses) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "steps must be >= 1"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--samples", "-1"], "--samples must be >= 0"),
        (["--data", "/no/such/file.txt"], "no such data file"),
    ],
)
def test_command_line_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        sg.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_piped_into_head_stops_quietly(tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("abba\nbaab\nab\nba\n")
    command = f"{sys.executable} -m microgpt_lib.scalar_gpt --steps 500 --data {data} | head -n 2"
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=120
    )
    assert len(result.stdout.splitlines()) == 2 and result.stdout.startswith(
        "4 documents"
    )
    assert "Traceback" not in result.stderr, result.stderr
