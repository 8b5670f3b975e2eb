"""microgpt_lib.autograd_lab: the variants Value is measured against, the toy problem, the suite."""

from __future__ import annotations

import gc
import sys

import pytest
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
