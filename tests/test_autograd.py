"""microgpt_lib.autograd: Value against finite differences and torch, its graph, its errors."""

from __future__ import annotations

import gc
import math
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import close, graph_frees_itself, programs, run, weakly_held_value

from microgpt_lib import bench
from microgpt_lib.autograd import (
    Value,
    backpropagate,
    check_gradients,
    numerical_grad,
    topological_order,
    zero_grad,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_expressions_match_finite_differences(case):
    xs, program = case
    inputs = [Value(x) for x in xs]
    out = run(program, inputs)
    out.backward()
    numeric = numerical_grad(lambda vs: run(program, vs), xs, eps=1e-6)
    # rounding in the difference quotient is about 1e-16 * |intermediates| / 1e-6
    scale = max(1.0, abs(out.data))
    for v, n in zip(inputs, numeric):
        assert close(v.grad, n, rtol=1e-6, atol=1e-7 * scale), (v.grad, n, program)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_expressions_match_torch(case):
    torch = pytest.importorskip("torch")
    xs, program = case
    inputs = [Value(x) for x in xs]
    out = run(program, inputs)
    out.backward()
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    reference = run(program, tensors)
    reference.backward()
    assert close(out.data, reference.item(), rtol=1e-9, atol=1e-9)
    for v, t in zip(inputs, tensors):
        expected = t.grad.item() if t.grad is not None else 0.0
        assert close(v.grad, expected, rtol=1e-6, atol=1e-10), (v.grad, expected, program)


# --------------------------------------------------------------------------------------------
# the operations one by one


@pytest.mark.parametrize(
    "f, x, value, grad",
    [
        (lambda x: x + 2, 3.0, 5.0, 1.0),
        (lambda x: 2 + x, 3.0, 5.0, 1.0),
        (lambda x: x - 2, 3.0, 1.0, 1.0),
        (lambda x: 2 - x, 3.0, -1.0, -1.0),
        (lambda x: x * 4, 3.0, 12.0, 4.0),
        (lambda x: 4 * x, 3.0, 12.0, 4.0),
        (lambda x: x / 4, 3.0, 0.75, 0.25),
        (lambda x: 3 / x, 2.0, 1.5, -0.75),
        (lambda x: -x, 3.0, -3.0, -1.0),
        (lambda x: x**3, 2.0, 8.0, 12.0),
        (lambda x: x**-1, 2.0, 0.5, -0.25),
        (lambda x: x**0.5, 4.0, 2.0, 0.25),
        (lambda x: x**2, -3.0, 9.0, -6.0),
        (lambda x: x**0, 0.0, 1.0, 0.0),
        (lambda x: x**0.5, 0.0, 0.0, math.inf),
        (lambda x: x.exp(), 0.0, 1.0, 1.0),
        (lambda x: x.log(), math.e, 1.0, 1 / math.e),
        (lambda x: x.tanh(), 0.0, 0.0, 1.0),
        (lambda x: x.relu(), 2.0, 2.0, 1.0),
        (lambda x: x.relu(), -2.0, 0.0, 0.0),
        (lambda x: x.relu(), 0.0, 0.0, 0.0),  # PyTorch's convention at the kink
        (lambda x: x * x, 3.0, 9.0, 6.0),  # the same node on both sides
        (lambda x: x / x, 3.0, 1.0, 0.0),
        (lambda x: x - x, 3.0, 0.0, 0.0),
    ],
)
def test_each_operation(f, x, value, grad):
    v = Value(x)
    out = f(v)
    out.backward()
    assert out.data == pytest.approx(value)
    assert v.grad == pytest.approx(grad)
    assert type(out.data) is float and type(v.grad) is float


def test_extreme_but_valid_inputs():
    tiny = Value(2.2e-313)  # a subnormal float
    y = tiny**0
    y.backward()
    assert y.data == 1.0 and tiny.grad == 0.0
    for make in (lambda x: 1.0 / x, lambda x: Value(1.0) / x):
        x = Value(1e-200)
        y = make(x)
        y.backward()
        assert (
            y.data == pytest.approx(1e200) and x.grad == -math.inf
        )  # -1/x^2 is beyond float range
    with pytest.raises(OverflowError, match="too large for a float"):
        Value(1e-300) ** -2


def test_numbers_of_other_types_are_accepted_as_floats():
    x = Value(2)
    assert type(x.data) is float
    for number in (np.float64(3.0), np.float32(3.0), np.int64(3), Fraction(3, 1)):
        y = x * number + number
        assert type(y.data) is float and y.data == 9.0


def test_micrograd_sanity_check():
    """micrograd's own first test, with the numbers PyTorch gives."""
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    assert y.data == -20.0 and x.grad == 46.0


def test_fused_node_built_by_hand():
    xs, ws = [Value(1.0), Value(2.0), Value(3.0)], [Value(0.5), Value(-1.0), Value(2.0)]
    dot = Value(
        sum(x.data * w.data for x, w in zip(xs, ws)),
        children=tuple(xs) + tuple(ws),
        local_grads=tuple(w.data for w in ws) + tuple(x.data for x in xs),
    )
    (dot * dot).backward()
    assert dot.data == 4.5
    assert [x.grad for x in xs] == [2 * 4.5 * w.data for w in ws]
    assert [w.grad for w in ws] == [2 * 4.5 * x.data for x in xs]


# --------------------------------------------------------------------------------------------
# graphs: shape, order, sharing, accumulation


def test_chain_of_500k_nodes_without_recursion():
    limit = sys.getrecursionlimit()
    x = Value(0.5)
    y = x
    for _ in range(250_000):
        y = y * 0.999999 + 1e-6  # two nodes per step
    y.backward()
    assert x.grad == pytest.approx(0.999999**250_000, rel=1e-9)
    assert len(topological_order(y)) == 500_001
    assert sys.getrecursionlimit() == limit
    del y  # freeing a 500k-deep chain must not overflow the C stack either


def test_topological_order_is_the_depth_first_order():
    a, b = Value(2.0), Value(-3.0)
    c = a * b
    e = c + a
    t = e.tanh()
    x = c.exp()
    m = t * x
    q = b / a
    d = m - q
    order = topological_order(d)
    # what the recursive depth-first search gives: children in order, each node after them
    assert order == [a, b, c, e, t, x, m, q, d]
    position = {node: i for i, node in enumerate(order)}
    assert all(
        position[child] < position[node] for node in order for child in node._children
    )
    assert topological_order(a) == [a]


def test_shared_subexpressions():
    x, y = Value(1.5), Value(-2.0)
    a = x * y  # used 100 times
    s = sum([a] * 100)
    s.backward()
    assert a.grad == 100.0 and x.grad == 100 * y.data and y.grad == 100 * x.data
    assert len(topological_order(s)) == 3 + 100  # x, y, a and the 100 additions of sum()

    x = Value(0.7)
    z = x * x * x + x.tanh() * x  # x reached along many paths
    z.backward()
    assert x.grad == pytest.approx(
        3 * 0.7**2 + (1 - math.tanh(0.7) ** 2) * 0.7 + math.tanh(0.7)
    )


def test_backward_twice_accumulates_into_leaves_like_pytorch():
    x = Value(3.0)
    h = x * 2.0
    y = h * h
    y.backward()
    assert x.grad == 24.0 and h.grad == 12.0 and y.grad == 1.0
    y.backward()
    assert x.grad == 48.0  # leaves accumulate ...
    assert h.grad == 12.0 and y.grad == 1.0  # ... intermediates hold the latest pass
    zero_grad([x])
    y.backward()
    assert x.grad == 24.0


def test_two_outputs_sharing_a_node_sum_their_gradients():
    x = Value(2.0)
    shared = x.exp()
    first, second = shared * 3.0, shared.log() + shared
    first.backward()
    second.backward()
    assert x.grad == pytest.approx(3 * math.exp(2) + 1 + math.exp(2))


def test_backward_of_a_leaf_and_backpropagate_of_an_order():
    x = Value(5.0)
    x.backward()
    x.backward()
    assert x.grad == 2.0
    y = x * x
    order = topological_order(y)
    backpropagate(order)
    assert x.grad == 12.0


def test_zero_grad_takes_any_iterable():
    values = [Value(1.0), Value(2.0)]
    for v in values:
        v.grad = 5.0
    zero_grad(v for v in values)
    assert [v.grad for v in values] == [0.0, 0.0]


# --------------------------------------------------------------------------------------------
# memory: slots, no cycles


def test_nodes_have_slots_and_no_dict():
    v = Value(1.0) + Value(2.0)
    assert not hasattr(v, "__dict__")
    assert {"data", "grad", "_children", "_local_grads"} <= set(Value.__slots__)
    with pytest.raises(AttributeError):
        v.label = "x"


def test_graphs_are_freed_by_reference_counting_alone():
    gc.collect()
    with bench.paused_gc():
        assert graph_frees_itself(weakly_held_value)
        assert gc.collect() == 0  # nothing was left for the collector


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "make",
    [
        lambda: Value(1.0) + "abc",
        lambda: "abc" + Value(1.0),
        lambda: Value(1.0) + None,
        lambda: None + Value(1.0),
        lambda: Value(1.0) * None,
        lambda: Value(1.0) - "x",
        lambda: "x" - Value(1.0),
        lambda: Value(1.0) / None,
        lambda: None / Value(1.0),
        lambda: Value(1.0) * [1.0],
        lambda: Value(1.0) + 1j,
        lambda: Value(1.0) + True,
    ],
)
def test_adding_a_non_number_names_the_operand(make):
    with pytest.raises(
        TypeError,
        match=r"unsupported operand for .: expected a Value or a real number .*, "
        r"got (str|NoneType|list|complex|bool)",
    ):
        make()


@pytest.mark.parametrize("data", [None, "1.5", [1.0], 1j, True])
def test_constructor_rejects_non_numbers(data):
    with pytest.raises(TypeError, match="Value\\(data\\): expected a real number"):
        Value(data)


@pytest.mark.parametrize("x", [0.0, -1.0, -1e-300])
def test_log_of_non_positive(x):
    with pytest.raises(ValueError, match="log of a non-positive"):
        Value(x).log()


def test_power_errors():
    with pytest.raises(TypeError, match="Value \\*\\* Value is not supported"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(TypeError, match="\\*\\* Value is not supported"):
        2 ** Value(3.0)
    with pytest.raises(
        TypeError,
        match="unsupported operand for \\*\\*: expected a real number, got str '2'",
    ):
        Value(2.0) ** "2"
    with pytest.raises(ValueError, match="negative base with a fractional exponent"):
        Value(-8.0) ** (1 / 3)
    with pytest.raises(ZeroDivisionError, match="negative power"):
        Value(0.0) ** -1


def test_division_by_zero():
    for make in (
        lambda: Value(1.0) / 0,
        lambda: Value(1.0) / Value(0.0),
        lambda: 1 / Value(0.0),
    ):
        with pytest.raises(ZeroDivisionError, match="0"):
            make()


def test_numerical_grad_rejects_non_numbers():
    with pytest.raises(
        TypeError, match="numerical_grad\\(xs\\): expected real numbers, got str"
    ):
        numerical_grad(lambda vs: vs[0], ["1.0"])


# --------------------------------------------------------------------------------------------
# the gradient check itself


def test_check_gradients_agrees_on_a_right_gradient():
    pairs = check_gradients(
        lambda v: (v[0] * v[1] + v[0].exp()).log() ** 1.5 / v[1], [0.3, 2.0]
    )
    assert all(abs(a - n) < 1e-8 for a, n in pairs)


def test_check_gradients_catches_a_wrong_gradient():
    def wrong_square(vs):  # a hand-built node whose local gradient is x instead of 2x
        x = vs[0]
        return Value(x.data**2, (x,), (x.data,))

    with pytest.raises(AssertionError, match="input 0"):
        check_gradients(wrong_square, [3.0])


def test_numerical_grad_error_is_small_and_scales_with_eps():
    f = lambda vs: (vs[0] * 3.0).tanh() * vs[0].exp()  # noqa: E731
    x = 0.4
    exact = (3 * (1 - math.tanh(1.2) ** 2) + math.tanh(1.2)) * math.exp(0.4)
    errors = {
        eps: abs(numerical_grad(f, [x], eps)[0] - exact) for eps in (1e-2, 1e-3, 1e-6)
    }
    assert errors[1e-2] / errors[1e-3] == pytest.approx(
        100, rel=0.05
    )  # truncation error ~ eps^2
    assert errors[1e-6] < 1e-9
