"""microgpt_lib.optim_lab: the ladder's rows, the lessons' measurements, the exercises' checkers."""

import numpy as np
import pytest

from microgpt_lib import optim_lab
from microgpt_lib.config import GPTConfig

TINY = GPTConfig(vocab_size=5, block_size=4, n_embd=8, n_head=2)


def test_every_rung_of_the_ladder_does_the_same_step():
    cases = optim_lab.ladder_cases(TINY, scalar=False)
    assert list(cases) == [
        "numpy naive",
        "numpy inplace",
        "numpy foreach",
        "numba fused",
        "numba fused, no check",
        "torch for-loop",
        "torch foreach",
        "torch fused",
    ]
    for step in cases.values():
        step()


def test_ladder_rows_report_time_bytes_and_rates():
    rows = optim_lab.ladder_rows(TINY, repeats=1, bandwidth_gbs=10.0)
    by = {r["impl"]: r for r in rows}
    assert by["scalar Values (microgpt)"]["params"] == TINY.num_params()
    for row in rows:
        assert row["ms_per_step"] > 0 and row["percent_of_bandwidth"] > 0
    assert by["numba fused"]["bytes_allocated_per_step"] < 1024
    assert by["numpy naive"]["bytes_allocated_per_step"] > 8 * 64  # temporaries
    assert by["torch fused"]["speedup_over_torch_fused"] == 1.0
    assert (
        by["torch fused"]["bytes_allocated_per_step"] is None
    )  # tracemalloc cannot see it


def test_parity_with_torch_is_at_rounding_level():
    assert optim_lab.parity_with_torch("AdamW", "fused", steps=20) < 1e-12
    assert (
        optim_lab.parity_with_torch("SGD", "foreach", 20, {"lr": 0.1, "momentum": 0.9})
        < 1e-12
    )


def test_temporaries_are_elided_only_for_large_arrays():
    small, large = optim_lab.temporary_rows((1_000, 100_000))
    assert small["bytes_per_element"] > 15  # two float64 temporaries alive at once
    assert large["bytes_per_element"] < 9  # numpy reused the first one in place


def test_nep50_float64_scalar_costs_an_allocation():
    strong, weak = optim_lab.nep50_rows(50_000)
    assert strong["peak_bytes"] > 10 * weak["peak_bytes"]
    assert weak["peak_bytes"] < 1024


def test_decoupled_decay_depends_on_weight_decay_and_l2_in_adam_barely_does():
    paths = optim_lab.decay_trajectories(steps=50, weight_decays=(0.01, 0.1))
    adam_small, adam_large = (
        paths["Adam, weight_decay 0.01"],
        paths["Adam, weight_decay 0.1"],
    )
    adamw_small, adamw_large = (
        paths["AdamW, weight_decay 0.01"],
        paths["AdamW, weight_decay 0.1"],
    )
    assert abs(adam_small[-1] - adam_large[-1]) < 1e-3  # Adam rescales wd * w away
    assert adamw_large[-1] < adamw_small[-1] < 1.0
    assert adamw_small[-1] == pytest.approx((1 - 0.01 * 0.01) ** 50)


def test_check_sgd_momentum_step_right_and_wrong():
    assert "allocation-free" in optim_lab.check_sgd_momentum_step(
        optim_lab.reference_sgd_momentum_step
    )

    def allocating(p, g, buf, lr, momentum):  # right numbers, but temporaries
        buf[...] = momentum * buf + g
        p -= lr * buf

    with pytest.raises(AssertionError, match="temporary array"):
        optim_lab.check_sgd_momentum_step(allocating)

    def wrong_order(p, g, buf, lr, momentum):  # steps with the old buffer
        np.subtract(p, lr * buf, out=p)
        np.multiply(buf, momentum, out=buf)
        np.add(buf, g, out=buf)

    with pytest.raises(AssertionError, match="weights are wrong"):
        optim_lab.check_sgd_momentum_step(wrong_order)


def test_check_warmup_cosine_right_and_wrong():
    assert "matches" in optim_lab.check_warmup_cosine(optim_lab.reference_warmup_cosine)

    def off_by_one(step, lr, warmup, decay_steps, min_lr):
        if step < warmup:
            return lr * step / warmup  # starts at 0
        return optim_lab.reference_warmup_cosine(step, lr, warmup, decay_steps, min_lr)

    with pytest.raises(AssertionError, match="at step 0"):
        optim_lab.check_warmup_cosine(off_by_one)


def test_check_adam_bytes_right_and_wrong():
    assert "7 arrays" in optim_lab.check_adam_bytes(optim_lab.reference_adam_bytes)
    with pytest.raises(AssertionError, match="expected"):
        optim_lab.check_adam_bytes(lambda n, itemsize: 4 * n * itemsize)  # reads only


@pytest.mark.slow
def test_suite_rows(suite_options):
    rows = optim_lab.suite_optim(suite_options(repeats=1))
    kinds = {r["kind"] for r in rows}
    assert kinds == {"bandwidth", "ladder", "parity"}
    assert all(
        r["max_relative_difference"] < 1e-12 for r in rows if r["kind"] == "parity"
    )
    fused = [r for r in rows if r.get("impl") == "numba fused"]
    assert len(fused) == 2 and all(r["bytes_allocated_per_step"] < 1024 for r in fused)
