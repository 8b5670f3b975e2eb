"""microgpt_lib.autograd_lab: the variants Value is measured against, the toy problem, the suite,
one training step, random expressions checked against torch, and the exercises' checkers."""

from __future__ import annotations

import gc
import math
import sys

import pytest
import strategies
from strategies import graph_frees_itself, weakly_held_value

from microgpt_lib import autograd_lab, bench
from microgpt_lib.autograd import Value, zero_grad
from microgpt_lib.autograd_lab import MLP, ClosureValue, DictValue, hinge_loss, make_moons


def test_the_no_slots_variant_has_a_dict():
    assert hasattr(DictValue(1.0), "__dict__") and not hasattr(Value(1.0), "__dict__")


def test_micrograd_closures_make_cycles_only_the_collector_frees():
    gc.collect()
    with bench.paused_gc():
        assert graph_frees_itself(weakly_held_value)

        class _ClosureLeaf(ClosureValue):
            pass

        assert not graph_frees_itself(_ClosureLeaf)
        assert gc.collect() > 0


def test_variants_compute_the_same_loss_and_gradients():
    points, labels = make_moons(8, seed=3)
    results = {}
    for name, (number, sort, propagate) in autograd_lab.VALUE_VARIANTS.items():
        model = MLP(2, [4, 4, 1], number=number, seed=1)
        loss, accuracy = hinge_loss(model, points, labels)
        propagate(sort(loss))
        results[name] = (loss.data, accuracy, [p.grad for p in model.parameters()])
    reference = results["value"]
    for name, (loss, accuracy, grads) in results.items():
        assert (
            loss == pytest.approx(reference[0], rel=1e-12) and accuracy == reference[1]
        ), name
        assert grads == pytest.approx(reference[2], rel=1e-9, abs=1e-12), name
    floats = MLP(2, [4, 4, 1], number=float, seed=1)
    assert hinge_loss(floats, points, labels)[0] == pytest.approx(reference[0], rel=1e-12)


def test_recursive_topological_order_hits_the_recursion_limit():
    x = ClosureValue(1.0)
    y = x
    for _ in range(sys.getrecursionlimit() + 10):
        y = y + 1.0
    with pytest.raises(RecursionError):
        y.backward()


def test_make_moons_is_deterministic_and_balanced():
    points, labels = make_moons(10, seed=7)
    assert (points, labels) == make_moons(10, seed=7)
    assert labels.count(1) == labels.count(-1) == 5
    with pytest.raises(ValueError, match="at least 2"):
        make_moons(1)
    with pytest.raises(ValueError, match="labels"):
        hinge_loss(MLP(2, [1]), points, labels[:3])


def test_mlp_trains_on_moons():
    points, labels = make_moons(40, seed=0)
    model = MLP(2, [8, 8, 1], seed=0)
    params = model.parameters()
    history = []
    for step in range(30):
        loss, accuracy = hinge_loss(model, points, labels)
        zero_grad(params)
        loss.backward()
        for p in params:
            p.data -= 0.5 * p.grad
        history.append((loss.data, accuracy))
    assert history[-1][0] < 0.5 * history[0][0]
    assert history[-1][1] >= 0.85
    floats = model.with_floats()
    assert floats(points[0]) == pytest.approx(model(points[0]).data, rel=1e-12)


def test_draw_graph_draws_every_node_and_edge():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = Value(2.0), Value(-3.0)
    c = a * b
    d = (c + a).tanh()
    d.backward()
    ax = autograd_lab.draw_graph(d, {a: "a", b: "b", c: "c = a*b"})
    texts = [t.get_text() for t in ax.texts]
    assert sum("data" in t for t in texts) == 5  # a, b, c, c + a and d
    assert any(t.startswith("c = a*b") for t in texts)
    plt.close(ax.figure)


@pytest.mark.slow
def test_suite_rows_are_complete_and_consistent(suite_options):
    rows = autograd_lab.suite_autograd(suite_options(sizes=[1500], repeats=1))
    kinds = {(r["kernel"], r["gc"]) for r in rows}
    variants = autograd_lab.VALUE_VARIANTS
    assert kinds == {
        ("float", "enabled"),
        *((v, g) for v in variants for g in ("enabled", "paused")),
    }
    for row in rows:
        assert (
            row["nodes"] > 1000 and row["forward_ns_per_node"] > 0 and row["median_s"] > 0
        )
        if row["kernel"] != "float":
            assert row["bytes_per_node"] > 50 and row["backward_ns_per_node"] > 0
    by_kernel = {r["kernel"]: r for r in rows if r["gc"] == "paused"}
    assert (
        by_kernel["value"]["bytes_per_node"]
        < by_kernel["value-no-slots"]["bytes_per_node"]
    )
    assert (
        by_kernel["value-no-slots"]["bytes_per_node"]
        < by_kernel["closure"]["bytes_per_node"]
    )
    assert (
        by_kernel["closure"]["left_after_drop_mb"]
        > 0.9 * by_kernel["closure"]["graph_mb"]
    )
    assert by_kernel["value"]["left_after_drop_mb"] < 0.5 * by_kernel["value"]["graph_mb"]


# --------------------------------------------------------------------------------------------
# one training step


def test_train_step_is_the_loop_written_out():
    points, labels = make_moons(12, seed=2)
    by_hand, helper = MLP(2, [4, 1], seed=5), MLP(2, [4, 1], seed=5)
    for step in range(3):
        loss, accuracy = hinge_loss(by_hand, points, labels)
        zero_grad(by_hand.parameters())
        loss.backward()
        for p in by_hand.parameters():
            p.data -= 0.3 * p.grad
        assert autograd_lab.train_step(helper, points, labels, 0.3) == (
            loss.data,
            accuracy,
        )
    assert [p.data for p in helper.parameters()] == [p.data for p in by_hand.parameters()]


def test_train_step_restores_the_collector():
    points, labels = make_moons(4, seed=0)
    assert gc.isenabled()
    autograd_lab.train_step(MLP(2, [2, 1]), points, labels, 0.1)
    assert gc.isenabled()


# --------------------------------------------------------------------------------------------
# random expressions: the vocabulary of tests/strategies.py, on Values and on torch


def test_random_programs_are_deterministic_and_use_every_op():
    assert autograd_lab.random_program(3) == autograd_lab.random_program(3)
    used = {op for seed in range(40) for op, *_ in autograd_lab.random_program(seed)[1]}
    assert used == set(autograd_lab.OPS)


def test_the_lab_vocabulary_is_the_strategies_vocabulary():
    for seed in range(30):
        xs, program = autograd_lab.random_program(seed)
        ours = autograd_lab.run_program(program, [Value(x) for x in xs])
        theirs = strategies.run(program, [Value(x) for x in xs])
        assert ours.data == theirs.data, (seed, program)


def test_random_programs_match_torch_autograd():
    torch = pytest.importorskip("torch")
    for seed in range(40):
        xs, program = autograd_lab.random_program(seed)
        values = [Value(x) for x in xs]
        autograd_lab.run_program(program, values).backward()
        tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
        autograd_lab.run_program(program, tensors).backward()
        for v, t in zip(values, tensors):
            expected = t.grad.item() if t.grad is not None else 0.0
            assert strategies.close(v.grad, expected, rtol=1e-9, atol=1e-12), seed


def test_format_program_writes_one_line_per_step():
    text = autograd_lab.format_program([("mul", 0, 1, 0.0), ("add_c", 2, 0, -0.5)], 2)
    assert text == "r2 = r0 * r1\nr3 = r2 - 0.5"


# --------------------------------------------------------------------------------------------
# the exercises' checkers: the reference passes, plausible mistakes fail


def _node(s, x, local):
    return Value(s, (x,), (local,))


def test_sigmoid_checker():
    assert "right" in autograd_lab.check_sigmoid(autograd_lab.reference_sigmoid)
    with pytest.raises(AssertionError, match="one node"):  # composed of four nodes
        autograd_lab.check_sigmoid(lambda x: 1 / (1 + (-x).exp()))
    with pytest.raises(AssertionError, match="s \\(1 - s\\)"):  # the slope of e^x
        autograd_lab.check_sigmoid(
            lambda x: _node(autograd_lab.reference_sigmoid(x).data, x, math.exp(x.data))
        )
    with pytest.raises(AssertionError, match="OverflowError"):  # the naive formula
        autograd_lab.check_sigmoid(
            lambda x: (lambda s: _node(s, x, s * (1 - s)))(1 / (1 + math.exp(-x.data)))
        )


def test_backward_twice_checker():
    assert autograd_lab.backward_twice_factors(3) == (3.0, 1.0)
    assert "right" in autograd_lab.check_backward_twice(2, 1)
    assert "right" in autograd_lab.check_backward_twice(3, 1, calls=3)
    with pytest.raises(AssertionError, match="accumulates"):
        autograd_lab.check_backward_twice(1, 1)
    with pytest.raises(AssertionError, match="resets every inner node"):
        autograd_lab.check_backward_twice(2, 2)
    with pytest.raises(ValueError, match="at least 1"):
        autograd_lab.check_backward_twice(1, 1, calls=0)


def test_backward_twice_checker_on_micrograd():
    # micrograd resets no inner node: o <- n <- (x1*w1 + x2*w2) <- x1*w1 <- w1 compounds
    assert autograd_lab.backward_twice_factors(2, "micrograd") == (5.0, 2.0)
    assert "right" in autograd_lab.check_backward_twice(5, 2, engine="micrograd")
    with pytest.raises(AssertionError, match="compounds"):
        autograd_lab.check_backward_twice(2, 2, engine="micrograd")
    with pytest.raises(AssertionError, match="resets only the output"):
        autograd_lab.check_backward_twice(5, 1, engine="micrograd")
    with pytest.raises(ValueError, match="engine must be one of"):
        autograd_lab.check_backward_twice(2, 1, engine="torch")


def test_dot_checker():
    assert "right" in autograd_lab.check_dot(autograd_lab.reference_dot)
    with pytest.raises(AssertionError, match="one Value whose children"):
        autograd_lab.check_dot(lambda ws, xs: sum((w * x for w, x in zip(ws, xs)), 0.0))
    with pytest.raises(AssertionError, match="local gradients' order"):
        autograd_lab.check_dot(
            lambda ws, xs: Value(
                sum(w.data * x.data for w, x in zip(ws, xs)),
                (*ws, *xs),
                (*(w.data for w in ws), *(x.data for x in xs)),
            )
        )
    with pytest.raises(ValueError, match="as many weights"):
        autograd_lab.reference_dot([Value(1.0)], [])
