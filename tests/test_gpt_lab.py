"""microgpt_lib.gpt_lab: the side-by-side rows, the batch sweep, the profile, and the
exercises' checkers (each passes its reference and fails a plausible wrong answer)."""

from __future__ import annotations

import numpy as np
import pytest

from microgpt_lib import gpt, gpt_lab
from microgpt_lib.tensor import Tensor, make_node, rmsnorm


def test_side_by_side_rows(names, tokenizer):
    rows = gpt_lab.side_by_side(names[:50], tokenizer, 3)
    assert [r["impl"] for r in rows] == list(gpt_lab.STEPS)
    for row in rows:
        assert row["steps"] == 3 and len(row["losses"]) == 3
        assert row["max_loss_diff"] < 1e-9  # the same losses as chapter 02, step by step
        assert row["ms_per_step"] > 0 and row["speedup_vs_scalar_fast"] > 0
    assert rows[0]["speedup_vs_scalar_fast"] == 1.0
    with pytest.raises(ValueError, match="unknown implementation 'numpy'"):
        gpt_lab.side_by_side(names[:5], tokenizer, 1, impls=("numpy",))


def test_batch_rows_count_real_tokens(names, tokenizer):
    rows = gpt_lab.batch_rows(
        names[:64], tokenizer, (1, 4), ("float32",), steps=2, threads=1
    )
    assert [(r["batch"], r["dtype"], r["threads"]) for r in rows] == [
        (1, "float32", 1),
        (4, "float32", 1),
    ]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[1]["tokens_per_step"] > rows[0]["tokens_per_step"]


def test_graph_size_and_profile(config, tokenizer):
    model = gpt.MatrixGPT.init(config)
    batch = gpt.make_batch([tokenizer.encode_document("emma")], config)
    nodes, edges = gpt_lab.graph_size(gpt.loss(model, batch))
    assert 9 < nodes < 60 and edges >= nodes - 1  # 9 parameters + a few dozen ops
    rows = gpt_lab.step_profile(model, batch, steps=2, top=5)
    assert len(rows) == 5 and all(0 <= r["share"] <= 1 for r in rows)
    assert not any(p.grad.any() for p in model.parameters())  # it ran on a twin


def test_suite_runs_quick(suite_options):
    rows = gpt_lab.suite_gpt(suite_options(steps=2, sizes=(1, 2), dtypes=("float32",)))
    kinds = [r["kind"] for r in rows]
    assert kinds == ["step"] * 4 + ["batch"] * 2


# --------------------------------------------------------------------------------------------
# the exercises


def test_check_silu_passes_the_reference():
    assert "check_silu" in gpt_lab.check_silu(gpt_lab.reference_silu)


def test_check_silu_fails_a_missing_product_rule():
    def wrong(x: Tensor) -> Tensor:
        sig = 1.0 / (1.0 + np.exp(-x.data))
        return make_node(x.data * sig, "silu", (x,), lambda g: (g * sig,))

    with pytest.raises(AssertionError, match="product rule"):
        gpt_lab.check_silu(wrong)


def test_check_silu_fails_a_composed_answer():
    with pytest.raises(AssertionError, match="one node"):
        gpt_lab.check_silu(lambda x: x * ((-x).exp() + 1.0) ** -1)


def test_check_rmsnorm_gain_passes_the_reference():
    assert "check_rmsnorm_gain" in gpt_lab.check_rmsnorm_gain(
        gpt_lab.reference_rmsnorm_gain
    )


def test_check_rmsnorm_gain_fails_a_gain_missing_from_the_x_gradient():
    def wrong(x: Tensor, gain: Tensor, eps: float) -> Tensor:
        s = 1.0 / np.sqrt((x.data * x.data).mean(axis=-1, keepdims=True) + eps)
        y = x.data * s

        def grad_fn(g):
            return s * (g - y * (g * y).mean(axis=-1, keepdims=True)), g * y

        return make_node(y * gain.data, "rmsnorm_gain", (x, gain), grad_fn)

    with pytest.raises(AssertionError, match="gradient for x"):
        gpt_lab.check_rmsnorm_gain(wrong)


def test_check_rmsnorm_gain_fails_a_composed_answer():
    with pytest.raises(AssertionError, match="one node"):
        gpt_lab.check_rmsnorm_gain(lambda x, gain, eps: rmsnorm(x, eps) * gain)
