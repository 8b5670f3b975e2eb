"""Chapter 10: the torch GPT against chapter 09's, the loop, checkpoints, sampling, DDP."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from microgpt_lib import gpt, scalar_gpt, train
from microgpt_lib.config import GPTConfig, init_weights

WORDS = [
    "emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn",
    "abigail", "emily", "ella", "elizabeth", "camila", "luna", "sofia", "avery", "mila",
    "aria", "scarlett", "penelope", "layla", "chloe", "victoria", "madison", "eleanor",
    "grace", "nora", "riley", "zoey", "hannah", "hazel", "lily", "ellie", "violet",
    "lillian", "zoe", "stella", "aurora", "natalie",
]  # fmt: skip


def tiny(**changes) -> train.TrainSettings:
    """A run that takes a fraction of a second: 2 layers, 16 wide, batch 8."""
    base = dict(
        n_layer=2,
        n_head=2,
        n_embd=16,
        block_size=10,
        batch_size=8,
        max_iters=20,
        warmup_iters=2,
        eval_interval=10,
        eval_iters=2,
        log_interval=5,
        learning_rate=1e-2,
        min_lr=1e-3,
    )
    return train.TrainSettings(**{**base, **changes})


def run(settings, tmp_path, **kw):
    return train.train(
        settings.replace(out_dir=str(tmp_path)), WORDS, verbose=False, **kw
    )


# --------------------------------------------------------------------------------------------
# the model


def test_torch_gpt_equals_the_numpy_gpt_in_loss_and_gradients():
    config = GPTConfig(vocab_size=27, block_size=12, n_layer=2, n_embd=16, n_head=4)
    weights = init_weights(config, 3)
    ours = train.TorchGPT.from_weights(config, weights, torch.float64)
    theirs = gpt.MatrixGPT.from_weights(config, weights)
    rng = np.random.default_rng(0)
    docs = [[26, *rng.integers(0, 26, n).tolist(), 26] for n in (3, 7, 11, 5)]
    batch = gpt.make_batch(docs, config)
    reference = gpt.loss(theirs, batch)
    reference.backward()
    mask = torch.from_numpy(batch.mask / batch.mask.sum())
    losses = train.token_losses(
        ours(torch.from_numpy(batch.idx)), torch.from_numpy(batch.targets)
    )
    loss = (losses * mask).sum()
    loss.backward()
    assert abs(loss.item() - reference.item()) < 1e-12
    for (name, p), (_, g) in zip(
        ours.named_parameters(), theirs.gradients().named_parameters()
    ):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-9, atol=1e-12, err_msg=name)


def test_torch_gpt_equals_the_scalar_gpt_at_microgpts_recipe():
    config = GPTConfig(vocab_size=27)
    weights = init_weights(config, 42)
    scalar = scalar_gpt.ScalarGPT.from_weights(config, weights)
    tokens = [26, 4, 12, 12, 0, 26]  # BOS e m m a BOS
    value = scalar_gpt.document_loss(scalar, tokens)
    value.backward()
    model = train.TorchGPT.from_weights(config, weights, torch.float64)
    batch = gpt.make_batch([tokens], config)
    loss = train.token_losses(
        model(torch.from_numpy(batch.idx)), torch.from_numpy(batch.targets)
    )
    loss = loss.mean()
    loss.backward()
    assert abs(loss.item() - value.data) < 1e-12
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(grads, scalar.gradients(), rtol=1e-9, atol=1e-12)


def test_scaled_dot_product_attention_equals_the_explicit_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64) for _ in range(3)
    )
    scores = (q @ k.transpose(-1, -2)) / 2.0
    scores = scores.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), -math.inf)
    explicit = torch.softmax(scores, -1) @ v
    torch.testing.assert_close(
        train.causal_attention(q, k, v), explicit, rtol=1e-12, atol=1e-12
    )
    # the last 3 queries against all 7 keys (a cache holding 4): the same rows
    torch.testing.assert_close(
        train.causal_attention(q[:, :, 4:], k, v, past=4),
        explicit[:, :, 4:],
        rtol=1e-12,
        atol=1e-12,
    )


def test_from_weights_rejects_wrong_shapes():
    config = GPTConfig(vocab_size=27)
    other = init_weights(GPTConfig(vocab_size=27, n_embd=8, n_head=2))
    with pytest.raises(ValueError, match="wte"):
        train.TorchGPT.from_weights(config, other)


# --------------------------------------------------------------------------------------------
# settings


def test_overrides_are_typed_and_unknown_keys_are_named():
    s = train.settings_from(
        ["--preset=microgpt", "--max_iters=7", "--learning_rate=3e-3"]
    )
    assert (s.n_embd, s.max_iters, s.learning_rate, s.batch_size) == (16, 7, 3e-3, 1)
    assert train.settings_from(["--compile=true"]).compile is True
    with pytest.raises(ValueError, match="did you mean --max_iters"):
        train.settings_from(["--max_iter=7"])
    with pytest.raises(ValueError, match="--batch_size takes int"):
        train.settings_from(["--batch_size=3.5"])
    with pytest.raises(ValueError, match="true or false"):
        train.settings_from(["--compile=maybe"])
    with pytest.raises(ValueError, match="--key=value"):
        train.settings_from(["max_iters=7"])
    with pytest.raises(ValueError, match="unknown preset"):
        train.settings_from(["--preset=huge"])


def test_settings_check_their_values():
    with pytest.raises(ValueError, match="divisible by n_head"):
        train.TrainSettings(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        train.TrainSettings(batch_size=30, gradient_accumulation_steps=4)
    with pytest.raises(ValueError, match="dtype must be one of"):
        train.TrainSettings(dtype="int8")
    with pytest.raises(ValueError, match="warmup_iters"):
        train.TrainSettings(max_iters=50, warmup_iters=100)
    with pytest.raises(TypeError, match="max_iters must be int"):
        train.TrainSettings(max_iters=1.5)
    with pytest.raises(ValueError, match="min_lr"):
        train.TrainSettings(min_lr=1.0)


def test_the_schedule_is_chapter_08s():
    s = train.TrainSettings(
        max_iters=1000, warmup_iters=100, learning_rate=1e-3, min_lr=1e-4
    )
    lr = s.lr_schedule()
    assert lr(0) < lr(50) < lr(99) <= 1e-3
    assert lr(100) == pytest.approx(1e-3) and lr(1000) == pytest.approx(1e-4)
    linear = train.settings_from(["--preset=microgpt"]).lr_schedule()
    assert linear(0) == 0.01 and linear(500) == pytest.approx(0.005)


# --------------------------------------------------------------------------------------------
# the loop


def test_numpy_and_torch_backends_give_the_same_losses(tmp_path):
    a = run(tiny(dtype="float64"), tmp_path / "t")
    b = run(tiny(dtype="float64", backend="numpy"), tmp_path / "n")
    np.testing.assert_allclose(a.log.losses, b.log.losses, rtol=1e-9)
    assert [e["val"] for e in a.log.evals] == pytest.approx(
        [e["val"] for e in b.log.evals]
    )
    assert a.log.losses[-1] < a.log.losses[0]


def test_accumulation_gives_the_loss_of_the_whole_batch(tmp_path):
    one = run(tiny(dtype="float64"), tmp_path / "a")
    four = run(tiny(dtype="float64", gradient_accumulation_steps=4), tmp_path / "b")
    np.testing.assert_allclose(one.log.losses, four.log.losses, rtol=1e-9)


def test_bfloat16_autocast_trains_close_to_float32(tmp_path):
    full = run(tiny(), tmp_path / "a")
    half = run(tiny(dtype="bfloat16"), tmp_path / "b")
    assert half.log.losses != full.log.losses
    np.testing.assert_allclose(half.log.losses, full.log.losses, rtol=0.05)


def test_float16_is_refused_off_cuda(tmp_path):
    with pytest.raises(ValueError, match="bfloat16"):
        run(tiny(dtype="float16"), tmp_path)


def test_resume_continues_bit_identically(tmp_path):
    straight = run(tiny(max_iters=40), tmp_path / "straight")

    class Crash(Exception):
        pass

    def crash_after_20(step, loss, model):
        if step == 24:  # the checkpoint of step 20 is on disk; steps 21-24 are lost
            raise Crash

    with pytest.raises(Crash):
        run(tiny(max_iters=40), tmp_path / "crashed", on_step=crash_after_20)
    resumed = run(tiny(max_iters=40, init_from="resume"), tmp_path / "crashed")
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert resumed.log.losses == straight.log.losses
    assert [e["val"] for e in resumed.log.evals] == [e["val"] for e in straight.log.evals]


def test_numpy_backend_resumes_too(tmp_path):
    # stop at 10 of a schedule fixed at 20 steps (lr_decay_iters), then go on to 20
    numpy = tiny(backend="numpy", dtype="float64", lr_decay_iters=20)
    straight = run(numpy, tmp_path / "a")
    run(numpy.replace(max_iters=10), tmp_path / "b")
    resumed = run(numpy.replace(init_from="resume"), tmp_path / "b")
    assert resumed.log.losses == straight.log.losses


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    def poison(step, loss, model):
        if step == 13:  # after step 13, the weights hold a NaN: step 14's loss is NaN
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)

    with pytest.raises(train.NonFiniteLossError, match="nan at step 14.*untouched"):
        run(tiny(max_iters=40), tmp_path, on_step=poison)
    checkpoint = train.load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["iter_num"] == 10
    assert all(torch.isfinite(w).all() for w in checkpoint["model"].values())


# --------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_holds_what_a_resume_needs(tmp_path):
    run(tiny(), tmp_path)
    checkpoint = train.load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["iter_num"] == 20
    assert set(checkpoint) >= {
        "model",
        "optimizer",
        "settings",
        "rng",
        "data",
        "best_val_loss",
    }
    assert (tmp_path / "best.pt").is_file()
    model, tokenizer = train.model_from_checkpoint(tmp_path / "best.pt")
    assert len(train.sample_names(model, tokenizer, 3)) == 3


def test_the_atomic_write_survives_a_failure_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    train.save_checkpoint({"format": train.CHECKPOINT_FORMAT, "iter_num": 1}, path)
    real_fsync = os.fsync

    def disk_full(fd):  # the new bytes are in the temporary file when the disk gives out
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        train.save_checkpoint({"format": train.CHECKPOINT_FORMAT, "iter_num": 2}, path)
    monkeypatch.setattr(os, "fsync", real_fsync)

    def broken_save(obj, f):  # serialising fails half-way: nothing reaches the disk
        f.write(b"PK\x03\x04 half a zip file")
        raise RuntimeError("cannot pickle")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        train.save_checkpoint({"format": train.CHECKPOINT_FORMAT, "iter_num": 3}, path)
    assert train.load_checkpoint(path)["iter_num"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_bad_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(train.CheckpointError, match="no checkpoint at"):
        train.load_checkpoint(tmp_path / "missing.pt")
    run(tiny(), tmp_path / "run")
    good = (tmp_path / "run" / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(train.CheckpointError, match="truncated or corrupt"):
        train.load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(train.CheckpointError, match="truncated or corrupt"):
        train.load_checkpoint(tmp_path / "noise.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(train.CheckpointError, match="not a microgpt checkpoint"):
        train.load_checkpoint(tmp_path / "other.pt")


def test_resuming_another_config_names_the_difference_and_touches_nothing(tmp_path):
    run(tiny(), tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(
        train.CheckpointError, match="n_embd = 16 in the checkpoint, 32 now"
    ):
        run(tiny(n_embd=32, init_from="resume"), tmp_path)
    with pytest.raises(train.CheckpointError, match="learning_rate"):
        run(tiny(learning_rate=0.1, init_from="resume"), tmp_path)
    with pytest.raises(train.CheckpointError, match="documents differ"):
        train.train(
            tiny(init_from="resume", out_dir=str(tmp_path)), WORDS[::-1], verbose=False
        )
    assert (tmp_path / "last.pt").read_bytes() == before
    with pytest.raises(train.CheckpointError, match="no checkpoint"):
        run(tiny(init_from="resume"), tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# sampling


def test_the_kv_cache_gives_the_tokens_recomputing_gives():
    config = GPTConfig(vocab_size=27, block_size=24, n_layer=2, n_embd=16, n_head=4)
    model = train.TorchGPT.from_weights(config, init_weights(config, 1), torch.float64)
    prompt = torch.tensor([[26, 3, 4], [26, 0, 1], [26, 9, 9]])
    outs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(5)
        outs.append(train.generate(model, prompt, 20, 1.0, 0, g, use_cache))
    assert torch.equal(outs[0], outs[1])
    assert outs[0].shape == (3, 23)
    # and the cached logits are the recomputed ones
    with torch.inference_mode():
        cache = train.KVCache.empty(model, 3)
        seq = outs[0][:, :12]
        stepwise = torch.cat([model(seq[:, i : i + 1], cache) for i in range(12)], dim=1)
        torch.testing.assert_close(stepwise, model(seq), rtol=1e-12, atol=1e-12)


def test_top_k_draws_only_the_k_most_likely():
    logits = torch.tensor([[0.0, 5.0, 4.0, 1.0, 3.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    probs = train.sampling_probs(logits, 1.0, 2)
    drawn = torch.multinomial(probs, 1, generator=g).unique().tolist()
    assert drawn == [1, 2]


def test_generate_rejects_bad_arguments():
    config = GPTConfig(vocab_size=27, block_size=8)
    model = train.TorchGPT.from_weights(config, init_weights(config))
    prompt = torch.tensor([[26]])
    with pytest.raises(ValueError, match="temperature"):
        train.generate(model, prompt, 3, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        train.generate(model, prompt, 3, top_k=-1)
    with pytest.raises(ValueError, match="block_size = 8"):
        train.generate(model, prompt, 9)


# --------------------------------------------------------------------------------------------
# the command line and several processes


def cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "microgpt_lib.train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


TINY_ARGS = [
    "--n_layer=1", "--n_head=2", "--n_embd=8", "--block_size=10", "--batch_size=8",
    "--max_iters=12", "--warmup_iters=2", "--eval_interval=6", "--eval_iters=2",
    "--log_interval=4", "--dtype=float64",
]  # fmt: skip


@pytest.fixture
def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def test_the_command_line_trains_checkpoints_and_samples(tmp_path, words_file):
    out = tmp_path / "out"
    done = cli(*TINY_ARGS, f"--data={words_file}", f"--out_dir={out}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("step 0: train loss ")
    assert any(line.startswith("iter 4 | loss ") for line in lines)
    assert any(
        line.startswith("median ") and line.endswith("ms per step") for line in lines
    )
    assert sum(line.startswith("sample ") for line in lines) == 10
    sampled = cli("sample", f"--ckpt={out / 'best.pt'}", "--num_samples=3", "--top_k=5")
    assert sampled.returncode == 0, sampled.stderr
    assert len(sampled.stdout.splitlines()) == 3
    bad = cli("--n_embd=7")
    assert bad.returncode != 0 and "divisible by n_head" in bad.stderr
    if not torch.cuda.is_available():
        absent = cli(*TINY_ARGS, f"--data={words_file}", "--device=cuda")
        assert absent.returncode != 0 and absent.stderr.startswith("error: ")
        assert "Traceback" not in absent.stderr
    missing = cli("sample", f"--ckpt={tmp_path / 'nope.pt'}")
    assert missing.returncode != 0 and "no checkpoint at" in missing.stderr
    assert "--learning_rate" in cli("--help").stdout


@pytest.mark.slow
def test_two_gloo_processes_give_the_losses_of_one(tmp_path, words_file):
    from microgpt_lib.train_lab import torchrun_command

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [*TINY_ARGS, f"--data={words_file}"]
    one = cli(*common, f"--out_dir={tmp_path / 'one'}", env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [*torchrun_command(), "--nproc_per_node", "2", "-m", "microgpt_lib.train", *common,
         f"--out_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr

    def losses(text):
        return [float(line.split("|")[1].split()[1]) for line in text.splitlines()
                if line.startswith("iter ")]  # fmt: skip

    assert "x 2 processes" in two.stdout
    assert two.stdout.count("step 12: train loss") == 1  # rank 0 prints, alone
    np.testing.assert_allclose(losses(two.stdout), losses(one.stdout), rtol=1e-9)
    a = train.load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    b = train.load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-12)
