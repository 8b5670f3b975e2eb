"""Chapter 10's lab: the experiments run and report honestly, the checkers judge right and wrong."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import WORDS

from microgpt_lib import train, train_lab


def test_step_rows_time_each_backend_and_dtype():
    rows = train_lab.step_rows(
        WORDS,
        steps=5,
        presets=("microgpt",),
        variants=(("numpy", "float64"), ("torch", "float64")),
    )
    assert [(r["backend"], r["dtype"]) for r in rows] == [
        ("numpy", "float64"),
        ("torch", "float64"),
    ]
    for r in rows:
        assert r["ms_per_step"] > 0 and r["tokens_per_s"] > 0 and len(r["losses"]) == 5
    # same settings, same weights: the two backends train alike
    assert rows[0]["losses"] == pytest.approx(rows[1]["losses"], rel=1e-9)


def test_batch_rows_count_tokens(monkeypatch):
    rows = train_lab.batch_rows(WORDS, sizes=(2, 8), steps=4)
    assert [r["batch"] for r in rows] == [2, 8]
    assert all(r["tokens_per_s"] > 0 for r in rows)


def test_run_rows_change_one_thing_each():
    rows = train_lab.run_rows(
        WORDS,
        names=("warm-up + cosine", "batch 32 as 4 x 8"),
        max_iters=20,
        eval_interval=10,
    )
    plain, accumulated = rows
    assert [e["iter"] for e in plain["evals"]] == [0, 10, 20]
    # accumulation changes how the batch is computed, not what: the same losses
    assert accumulated["losses"] == pytest.approx(plain["losses"], rel=1e-5)
    assert plain["median_grad_norm"] > 0 and 0 <= plain["clipped_fraction"] <= 1


def test_kv_cache_rows_measure_both_ways():
    rows = train_lab.kv_cache_rows((1, 8), batches=(2,), block_size=16, repeats=1)
    assert [r["prompt"] for r in rows] == [1, 8]
    assert [r["new_tokens"] for r in rows] == [16, 9]
    assert all(r["speedup"] > 0 for r in rows)
    with pytest.raises(ValueError, match="prompt lengths"):
        train_lab.kv_cache_rows((16,), block_size=16)


def test_compile_rows_fall_back_when_compiling_fails(monkeypatch, capfd):
    def broken_compile(model, **kwargs):
        def fails(*args, **kw):
            raise RuntimeError("no C++ compiler found")

        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    s = train.TrainSettings(max_iters=3, warmup_iters=0, eval_interval=0, compile=True)
    result = train.train(s, WORDS, verbose=False)
    assert len(result.log.steps) == 3 and result.backend.compiled is False
    assert "torch.compile does not work here (RuntimeError: no C++ compiler found)" in (
        capfd.readouterr().err
    )


def test_makemore_rows_parse_its_lines(tmp_path):
    fake = tmp_path / "makemore.py"
    fake.write_text(
        "import sys\n"
        "from torch.utils.tensorboard import SummaryWriter\n"
        "SummaryWriter('x').add_scalar('a', 1, 2)\n"
        "assert '--max-steps' in sys.argv\n"
        "for step in range(0, 40, 10):\n"
        "    print(f'step {step} | loss 2.5000 | step time {10 + step}.00ms')\n"
    )
    names = tmp_path / "names.txt"
    names.write_text("\n".join(WORDS) + "\n")
    theirs, ours = train_lab.makemore_rows(fake, names, steps=12)
    assert theirs["ms_per_step"] == 30.0 and theirs["samples"] == 3  # steps 10, 20, 30
    assert ours["ms_per_step"] > 0
    assert ours["speedup_vs_makemore"] == pytest.approx(30.0 / ours["ms_per_step"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        train_lab.makemore_rows(tmp_path / "missing.py", names)


def test_names_run_reports_its_curve_and_samples(tmp_path):
    result, (row,) = train_lab.names_run(
        WORDS, tmp_path, max_iters=20, warmup_iters=2, eval_interval=10, eval_iters=1
    )
    assert row["max_iters"] == 20 and len(row["samples"]) == 20
    assert [e["iter"] for e in row["evals"]] == [0, 10, 20]
    assert row["best_val"] == min(e["val"] for e in row["evals"])
    assert (tmp_path / "best.pt").is_file()


@pytest.mark.slow
def test_ddp_rows_agree_across_processes(tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("\n".join(WORDS) + "\n")
    args = [
        f"--data={words}", "--n_layer=1", "--n_embd=8", "--n_head=2", "--batch_size=8",
        "--max_iters=6", "--warmup_iters=1", "--dtype=float64",
    ]  # fmt: skip
    one, two = train_lab.ddp_rows(args)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len(two["losses"]) == 6 and two["max_loss_diff"] < 1e-9


def test_suite_runs_quick(suite_options, monkeypatch):
    calls = {}

    def fake(name):
        def record(*args, **kwargs):
            calls[name] = kwargs
            return [{"kind": name}]

        return record

    for name in ("step_rows", "batch_rows", "run_rows", "compile_rows", "kv_cache_rows",
                 "ddp_rows", "makemore_rows", "names_run"):  # fmt: skip
        monkeypatch.setattr(train_lab, name, fake(name))
    monkeypatch.setattr(train_lab, "load_names", lambda: WORDS)
    monkeypatch.delenv("MICROGPT_MAKEMORE", raising=False)
    rows = train_lab.suite_train(suite_options())
    assert {r["kind"] for r in rows} == {
        "step_rows", "batch_rows", "run_rows", "compile_rows", "kv_cache_rows", "ddp_rows",
    }  # fmt: skip
    monkeypatch.setenv("MICROGPT_MAKEMORE", "/somewhere/makemore.py")
    rows = train_lab.suite_train(suite_options())
    assert "makemore_rows" in {r["kind"] for r in rows}


# --------------------------------------------------------------------------------------------
# the exercises' checkers


def test_check_top_k_passes_the_library():
    assert "4 cases" in train_lab.check_top_k(train.top_k_logits)


def test_check_top_k_fails_a_batch_wide_threshold():
    def batch_wide(logits, k):
        kth = logits.flatten().topk(k).values[-1]
        return logits.masked_fill(logits < kth, -math.inf)

    with pytest.raises(AssertionError, match="each row on its own"):
        train_lab.check_top_k(batch_wide)


def test_check_top_k_fails_an_in_place_answer():
    def in_place(logits, k):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill_(logits < kth, -math.inf)

    with pytest.raises(AssertionError, match="must not change its input"):
        train_lab.check_top_k(in_place)


def test_check_sampling_probs_passes_the_library():
    assert "9 settings" in train_lab.check_sampling_probs(train.sampling_probs)


def test_check_sampling_probs_fails_a_temperature_that_multiplies():
    def multiplied(logits, temperature, top_k):
        return train.sampling_probs(
            logits * temperature * temperature, temperature, top_k
        )

    with pytest.raises(AssertionError, match="divide the logits"):
        train_lab.check_sampling_probs(multiplied)


def test_check_sampling_probs_fails_top_k_without_renormalising():
    def not_renormalised(logits, temperature, top_k):
        p = torch.softmax(logits / temperature, dim=-1)
        if top_k:
            p = torch.where(torch.isfinite(train.top_k_logits(logits, top_k)), p, 0.0)
        return p

    with pytest.raises(AssertionError, match="not 1"):
        train_lab.check_sampling_probs(not_renormalised)


def test_check_micro_batches_passes_the_library_and_fails_overlapping_shares():
    assert "5 splits" in train_lab.check_micro_batches(train.micro_batches)

    def same_for_every_rank(docs, micro, rank, world):
        size = len(docs) // (micro * world)
        return [docs[a * size : (a + 1) * size] for a in range(micro)]

    with pytest.raises(AssertionError, match="not each of"):
        train_lab.check_micro_batches(same_for_every_rank)
