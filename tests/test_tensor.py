"""microgpt_lib.tensor: every op against finite differences and torch, programs, errors."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import programs, run, tensor_inputs

from microgpt_lib import optim
from microgpt_lib.tensor import (
    Tensor,
    check_gradients,
    cross_entropy,
    linear,
    no_grad,
    numerical_grad,
    rmsnorm,
    softmax,
    topological_order,
)

torch = pytest.importorskip("torch")
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def weighted(out: Tensor, weights: np.ndarray) -> Tensor:
    """sum(out * weights): one number whose gradient tests every output at once."""
    return (out * weights).sum()


def as_torch(arrays):
    return [torch.tensor(a, requires_grad=True) for a in arrays]


# --------------------------------------------------------------------------------------------
# the ops: (tensor function, torch function, how to draw inputs)

BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
}

UNARY = {
    "neg": (lambda a: -a, lambda a: -a, False),
    "exp": (lambda a: a.exp(), lambda a: a.exp(), False),
    "log": (lambda a: a.log(), lambda a: a.log(), True),
    "tanh": (lambda a: a.tanh(), lambda a: a.tanh(), False),
    "relu": (lambda a: a.relu(), lambda a: a.relu(), False),
    "pow2": (lambda a: a**2, lambda a: a**2, False),
    "pow-1.5": (lambda a: a**-1.5, lambda a: a**-1.5, True),
    "sum": (lambda a: a.sum(), lambda a: a.sum(), False),
    "sum0": (lambda a: a.sum(0, keepdims=True), lambda a: a.sum(0, keepdim=True), False),
    "mean-1": (lambda a: a.mean(-1), lambda a: a.mean(-1), False),
    "T": (lambda a: a.T, lambda a: a.permute(*reversed(range(a.ndim))), False),
    "reshape": (lambda a: a.reshape(-1), lambda a: a.reshape(-1), False),
    "getitem": (lambda a: a[..., :1], lambda a: a[..., :1], False),
    "rmsnorm": (lambda a: rmsnorm(a, 1e-5), None, False),
    "softmax": (softmax, lambda a: torch.softmax(a, -1), False),
}


def torch_rmsnorm(a):
    return a / torch.sqrt((a * a).mean(-1, keepdim=True) + 1e-5)


def away_from_kinks(a: np.ndarray, positive: bool) -> np.ndarray:
    """Inputs where finite differences are accurate: |x| >= 0.2 (relu, division), > 0.2 for log
    and fractional powers."""
    a = np.where(np.abs(a) < 0.2, 0.2 + np.abs(a), a)
    return np.abs(a) if positive else a


shapes = hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)
floats = st.floats(-2, 2)


@SETTINGS
@given(
    st.sampled_from(sorted(BINARY)),
    hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
    st.integers(0, 2**31),
)
def test_binary_ops_with_broadcasting(op, shapes_, seed):
    rng = np.random.default_rng(seed)
    a, b = (away_from_kinks(rng.uniform(-2, 2, s), False) for s in shapes_.input_shapes)
    w = rng.normal(size=shapes_.result_shape)
    ours, theirs = BINARY[op]
    grads = check_gradients(lambda t: weighted(ours(t[0], t[1]), w), [a, b])
    ta, tb = as_torch([a, b])
    (theirs(ta, tb) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[1], tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@SETTINGS
@given(st.sampled_from(sorted(UNARY)), shapes, st.integers(0, 2**31))
def test_unary_ops(op, shape, seed):
    rng = np.random.default_rng(seed)
    ours, theirs, positive = UNARY[op]
    a = away_from_kinks(rng.uniform(-2, 2, shape), positive)
    w = rng.normal(size=ours(Tensor(a)).shape)
    grads = check_gradients(lambda t: weighted(ours(t[0]), w), [a])
    (ta,) = as_torch([a])
    (theirs or torch_rmsnorm)(ta).mul(torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], ta.grad.numpy(), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(
    st.integers(0, 2),  # batch axes
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.booleans(),  # broadcast b over the batch axes
    st.integers(0, 2**31),
)
def test_batched_matmul(batch, n, k, m, shared_b, seed):
    rng = np.random.default_rng(seed)
    lead = (2, 3)[:batch]
    a = rng.normal(size=(*lead, n, k))
    b = rng.normal(size=(k, m) if shared_b else (*lead, k, m))
    w = rng.normal(size=(*lead, n, m))
    grads = check_gradients(lambda t: weighted(t[0] @ t[1], w), [a, b])
    ta, tb = as_torch([a, b])
    ((ta @ tb) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[1], tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shapes_", [((3,), (3, 2)), ((2, 3), (3,)), ((4,), (4,))])
def test_matmul_with_vectors(shapes_):
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=s) for s in shapes_)
    w = rng.normal(size=np.shape(a @ b))
    grads = check_gradients(lambda t: weighted(t[0] @ t[1], w), [a, b])
    ta, tb = as_torch([a, b])
    ((ta @ tb) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads[1], tb.grad.numpy(), rtol=1e-10)


@SETTINGS
@given(shapes, st.integers(1, 4), st.integers(0, 2**31))
def test_linear(shape, outputs, seed):
    rng = np.random.default_rng(seed)
    x, wt = rng.normal(size=shape), rng.normal(size=(outputs, shape[-1]))
    w = rng.normal(size=(*shape[:-1], outputs))
    grads = check_gradients(lambda t: weighted(linear(t[0], t[1]), w), [x, wt])
    tx, tw = as_torch([x, wt])
    (torch.nn.functional.linear(tx, tw) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[1], tw.grad.numpy(), rtol=1e-10, atol=1e-12)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**31))
def test_causal_softmax(t, heads, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(heads, t, t))
    mask = np.tril(np.ones((t, t), bool))
    w = rng.normal(size=x.shape)
    grads = check_gradients(lambda v: weighted(softmax(v[0], mask), w), [x])
    (tx,) = as_torch([x])
    masked = tx.masked_fill(~torch.tensor(mask), float("-inf"))
    (torch.softmax(masked, -1) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert (softmax(Tensor(x), mask).data[:, ~mask] == 0).all()


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 5), st.integers(2, 6), st.integers(0, 2**31))
def test_cross_entropy_with_weights(b, t, vocab, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, t, vocab))
    targets = rng.integers(0, vocab, size=(b, t))
    weights = rng.uniform(0, 1, size=(b, t))
    grads = check_gradients(lambda v: cross_entropy(v[0], targets, weights), [z])
    (tz,) = as_torch([z])
    losses = torch.nn.functional.cross_entropy(
        tz.reshape(-1, vocab), torch.tensor(targets).reshape(-1), reduction="none"
    )
    loss = (losses * torch.tensor(weights).reshape(-1)).sum()
    loss.backward()
    assert abs(cross_entropy(Tensor(z), targets, weights).item() - loss.item()) < 1e-12
    np.testing.assert_allclose(grads[0], tz.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_cross_entropy_mean_by_default():
    z = np.random.default_rng(0).normal(size=(4, 3))
    targets = np.array([0, 2, 1, 1])
    loss = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(targets))
    assert abs(cross_entropy(Tensor(z), targets).item() - loss.item()) < 1e-14


def test_gather_with_repeated_rows_adds_their_gradients():
    table = np.random.default_rng(0).normal(size=(5, 3))
    index = np.array([[1, 1, 4], [0, 1, 4]])  # row 1 three times, row 4 twice
    w = np.random.default_rng(1).normal(size=(2, 3, 3))
    grads = check_gradients(lambda t: weighted(t[0][index], w), [table])
    (tt,) = as_torch([table])
    (tt[torch.tensor(index)] * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grads[0], tt.grad.numpy(), rtol=1e-12)


def test_transpose_with_axes_and_reshape():
    a = np.random.default_rng(0).normal(size=(2, 3, 4))
    w = np.random.default_rng(1).normal(size=(4, 6))
    check_gradients(lambda t: weighted(t[0].transpose(2, 0, 1).reshape(4, 6), w), [a])


# --------------------------------------------------------------------------------------------
# chapter 01's random programs, replayed on Tensors of mixed shapes, against torch


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.data())
def test_random_programs_match_torch(case, data):
    xs, program = case
    arrays = data.draw(tensor_inputs(xs))
    inputs = [Tensor(a) for a in arrays]
    out = run(program, inputs).sum()
    out.backward()
    tensors = as_torch(arrays)
    reference = run(program, tensors).sum()
    reference.backward()
    assert abs(out.item() - reference.item()) <= 1e-9 * max(1.0, abs(reference.item()))
    for t, r in zip(inputs, tensors):
        expected = r.grad.numpy() if r.grad is not None else np.zeros_like(t.data)
        np.testing.assert_allclose(t.grad, expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_programs_match_finite_differences(case):
    xs, program = case
    arrays = [np.array(x) for x in xs]
    inputs = [Tensor(a) for a in arrays]
    out = run(program, inputs)
    out.backward()
    numeric = numerical_grad(lambda ts: run(program, ts), arrays)
    scale = max(1.0, abs(out.item()))
    for t, n in zip(inputs, numeric):
        np.testing.assert_allclose(t.grad, n, rtol=1e-6, atol=1e-7 * scale)


# --------------------------------------------------------------------------------------------
# float32, leaves, graphs


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(2, 4)).astype(np.float32))
    w = Tensor(rng.normal(size=(3, 4)).astype(np.float32))
    y = softmax(rmsnorm(linear(x, w) * 0.5 + 1.0, 1e-5)) ** 2
    loss = cross_entropy(y, np.array([0, 2]))
    assert y.dtype == np.float32 and loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32
    x64, w64 = Tensor(x.data.astype(np.float64)), Tensor(w.data.astype(np.float64))
    y64 = softmax(rmsnorm(linear(x64, w64) * 0.5 + 1.0, 1e-5)) ** 2
    cross_entropy(y64, np.array([0, 2])).backward()
    np.testing.assert_allclose(w.grad, w64.grad, rtol=1e-4, atol=1e-6)


def test_astype_is_the_way_to_mix_dtypes():
    a = Tensor(np.ones(3, np.float32))
    b = Tensor(np.ones(3))
    (a.astype(np.float64) * b).sum().backward()
    assert a.grad.dtype == np.float32 and (a.grad == 1).all()


def test_leaf_gradients_accumulate_in_place_into_flat_buffers():
    rng = np.random.default_rng(0)
    params = [Tensor(rng.normal(size=(3, 2))), Tensor(rng.normal(size=(2,)))]
    data, grad = optim.flatten_(params)
    held = [p.grad for p in params]
    for _ in range(2):
        ((params[0] @ params[1]) ** 2).sum().backward()
    assert all(p.grad is g for p, g in zip(params, held))
    assert np.shares_memory(params[0].grad, grad) and np.abs(grad).sum() > 0
    opt = optim.Adam(params, lr=0.1)
    before = data.copy()
    opt.step()
    opt.zero_grad()
    assert not np.allclose(before, data) and (grad == 0).all()


def test_a_second_backward_carries_only_its_own_gradient():
    a = Tensor(np.array([1.0, 2.0]))
    hidden = a * 3
    hidden.sum().backward()
    hidden.sum().backward()
    assert (a.grad == 6).all() and (hidden.grad == 1).all()


def test_constants_get_no_gradient_and_no_grad_builds_no_graph():
    a = Tensor(np.ones(2))
    c = Tensor(np.ones(2), requires_grad=False)
    (a * c).sum().backward()
    assert c.grad is None and (a.grad == 1).all()
    with no_grad():
        out = (a * 2).sum()
    assert not out.requires_grad and out.op == "sum" and not topological_order(out)[:-1]
    with pytest.raises(ValueError, match="requires no gradient"):
        out.backward()


def test_a_long_chain_needs_no_recursion():
    x = Tensor(np.array(1.0))
    y = x
    for _ in range(5000):
        y = y * 1.0
    assert len(topological_order(y)) == 5001
    y.backward()
    assert x.grad == 1.0


def test_the_graph_frees_itself_without_the_collector():
    leaf = Tensor(np.ones(3))
    probe = weakref.ref(leaf)
    was = gc.isenabled()
    gc.disable()
    try:
        loss = cross_entropy(softmax(rmsnorm(leaf * 2)[None]), np.array([1]))
        loss.backward()
        del leaf, loss
        assert probe() is None
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------------------------
# bad inputs: errors that name the op and the shapes or dtypes


def test_shape_errors_name_the_op_and_both_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4, 5\)"):
        a + b
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) @ \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"linear: input \(2, 3\) and weight \(4, 5\)"):
        linear(a, b)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        a.transpose(0, 0)
    with pytest.raises(ValueError, match="does not broadcast"):
        softmax(a, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="targets of shape"):
        cross_entropy(a, np.zeros(3, int))
    with pytest.raises(
        IndexError, match=r"getitem: index out of range for shape \(2, 3\)"
    ):
        a[np.array([0, 5])]


def test_dtype_mixing_is_an_error():
    a, b = Tensor(np.ones(2, np.float32)), Tensor(np.ones(2))
    for op in (lambda: a + b, lambda: a * b, lambda: a @ b, lambda: a - np.ones(2)):
        with pytest.raises(TypeError, match="dtypes differ .float32 and float64"):
            op()
    assert (a * np.float64(2.0)).dtype == np.float32  # a number is not an array


def test_other_bad_inputs():
    with pytest.raises(TypeError, match="float64 or float32"):
        Tensor(np.ones(2, np.float16))
    with pytest.raises(TypeError, match="float64 or float32"):
        Tensor(["a"])
    a = Tensor(np.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="log needs data > 0"):
        a.log()
    with pytest.raises(ValueError, match="negative base"):
        a**0.5
    with pytest.raises(TypeError, match="exponent"):
        a**a
    with pytest.raises(TypeError, match="exponent"):
        2**a
    with pytest.raises(TypeError, match="expected a Tensor"):
        a + "x"
    with pytest.raises(ValueError, match="reduce it to one number"):
        a.backward()
    with pytest.raises(ValueError, match=r"targets must be in \[0, 2\)"):
        cross_entropy(a[None], np.array([2]))
    with pytest.raises(TypeError, match="bool array"):
        softmax(a, np.ones(2))
    with pytest.raises(ValueError, match="all False"):
        softmax(a, np.zeros(2, bool))
    with pytest.raises(ValueError, match="out of range"):
        a.sum(axis=3)


def test_check_gradients_names_a_wrong_gradient():
    def wrong(t):
        x = t[0]
        out = x * x
        out._grad_fn = lambda g: (g * x.data, None)  # half the true gradient
        return out.sum()

    with pytest.raises(AssertionError, match="gradient of input 0"):
        check_gradients(wrong, [np.array([1.0, 2.0])])
