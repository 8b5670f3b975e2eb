"""A scalar autograd engine: every number remembers how it was made, so its gradient can flow back.

    Value(data)              a float node: .data, .grad, its inputs and d(self)/d(input) for each
    topological_order(root)  every node root depends on, inputs before the nodes made from them
    backpropagate(order)     the chain rule over that order: what Value.backward() runs
    zero_grad(values)        set .grad = 0.0 on each value (before the next backward pass)
    numerical_grad(f, xs)    central finite differences: the slow, obvious reference gradient
    check_gradients(f, xs)   backward() against numerical_grad, with a message naming any mismatch

The design is micrograd's with microgpt's twist: each node stores its local gradients (plain
floats, computed in the forward pass) instead of a closure, so a node is four slots and a graph
holds no reference cycles: it is freed the moment its output is dropped. The topological order is
built with an explicit stack, so a chain of a million nodes needs no deep recursion.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Iterable, Sequence


class Value:
    """A float in a computation graph.

    children     the Values this one was computed from (empty for a leaf: an input or parameter)
    local_grads  local_grads[i] = d(self)/d(children[i]), a float worked out in the forward pass

    Anyone can build a fused node: a dot product is one Value whose children are xs + ws and whose
    local gradients are ws' data + xs' data. The two tuples must have the same length (unchecked:
    a check would cost every node of every graph).
    """

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(
        self,
        data: float,
        children: tuple[Value, ...] = (),
        local_grads: tuple[float, ...] = (),
    ) -> None:
        self.data = (
            data
            if type(data) is float
            else _real(data, "Value(data)", "a real number (int or float)")
        )
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    # ---- arithmetic: a number on either side becomes a constant, not a node of its own

    def __add__(self, other: Value | float) -> Value:
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1.0, 1.0))
        return Value(
            self.data + _real(other, "unsupported operand for +"), (self,), (1.0,)
        )

    __radd__ = __add__

    def __mul__(self, other: Value | float) -> Value:
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data))
        other = _real(other, "unsupported operand for *")
        return Value(self.data * other, (self,), (other,))

    __rmul__ = __mul__

    def __neg__(self) -> Value:
        return Value(-self.data, (self,), (-1.0,))

    def __sub__(self, other: Value | float) -> Value:
        if isinstance(other, Value):
            return Value(self.data - other.data, (self, other), (1.0, -1.0))
        return Value(
            self.data - _real(other, "unsupported operand for -"), (self,), (1.0,)
        )

    def __rsub__(self, other: float) -> Value:
        return Value(
            _real(other, "unsupported operand for -") - self.data, (self,), (-1.0,)
        )

    def __truediv__(self, other: Value | float) -> Value:
        if isinstance(other, Value):
            a, b = self.data, other.data
            if b == 0.0:
                raise ZeroDivisionError(
                    f"division by a Value whose data is 0.0 ({self!r} / {other!r})"
                )
            return Value(
                a / b, (self, other), (1.0 / b, -a / b / b)
            )  # not b * b: it underflows first
        b = _real(other, "unsupported operand for /")
        if b == 0.0:
            raise ZeroDivisionError(f"division of {self!r} by the number 0")
        return Value(self.data / b, (self,), (1.0 / b,))

    def __rtruediv__(self, other: float) -> Value:
        a, c = self.data, _real(other, "unsupported operand for /")
        if a == 0.0:
            raise ZeroDivisionError(
                f"division by a Value whose data is 0.0 ({other!r} / {self!r})"
            )
        return Value(c / a, (self,), (-c / a / a,))

    def __pow__(self, exponent: float) -> Value:
        if isinstance(exponent, Value):
            raise TypeError(
                "Value ** Value is not supported: the exponent must be a number; "
                "for a positive base write (exponent * base.log()).exp()"
            )
        n, a = _real(exponent, "unsupported operand for **", "a real number"), self.data
        if a == 0.0 and n < 0:
            raise ZeroDivisionError(
                f"0.0 ** {n}: zero cannot be raised to a negative power"
            )
        if a < 0.0 and not n.is_integer():
            raise ValueError(
                f"{a} ** {n}: a negative base with a fractional exponent has no real value"
            )
        try:
            if n == 0:  # x**0 = 1 is flat everywhere
                local = 0.0
            elif a == 0.0 and n < 1:  # x**n for 0 < n < 1 is vertical at 0
                local = math.inf
            else:
                local = n * a ** (n - 1)
            return Value(a**n, (self,), (local,))
        except OverflowError:
            raise OverflowError(
                f"{a!r} ** {n!r}: the result or its slope is too large for a float"
            ) from None

    def __rpow__(self, base: float) -> Value:
        raise TypeError(
            f"{base!r:.40} ** Value is not supported: the exponent must be a number; "
            "for a positive base write (value * math.log(base)).exp()"
        )

    # ---- functions

    def exp(self) -> Value:
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def log(self) -> Value:
        a = self.data
        if not a > 0.0:  # also catches nan
            raise ValueError(f"log of a non-positive Value ({a!r}): log needs data > 0")
        return Value(math.log(a), (self,), (1.0 / a,))

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,))

    def relu(self) -> Value:
        a = self.data
        return Value(a, (self,), (1.0,)) if a > 0.0 else Value(0.0, (self,), (0.0,))

    # ---- the backward pass

    def backward(self) -> None:
        """Fill in .grad = d(self)/d(node) for every node self depends on.

        Gradients of leaves (inputs and parameters: Values with no children) accumulate, like
        PyTorch's .grad: a second backward() adds to them, so zero them between training steps
        with zero_grad(params). Every other node holds the gradient of the latest call.
        """
        backpropagate(topological_order(self))


def _real(
    x: object, where: str, expected: str = "a Value or a real number (int or float)"
) -> float:
    """x as a float, or a TypeError that names x and where it was given."""
    if type(x) is float:
        return x
    if isinstance(x, Real) and not isinstance(
        x, bool
    ):  # int, numpy floats, Fraction, ...
        return float(x)
    raise TypeError(f"{where}: expected {expected}, got {type(x).__name__} {x!r:.40}")


def topological_order(root: Value) -> list[Value]:
    """Every node that root depends on (root included), each after all of its children.

    A depth-first search with an explicit stack of (node, iterator over its children): the same
    order as the recursive version, without Python's recursion limit (1000 frames by default).
    """
    order: list[Value] = []
    visited = {root}
    stack = [(root, iter(root._children))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if child not in visited:
                visited.add(child)
                stack.append((child, iter(child._children)))
                break
        else:  # every child is done: the node itself can go
            stack.pop()
            order.append(node)
    return order


def backpropagate(order: list[Value]) -> None:
    """The chain rule over a topological order (children first) whose last node is the output.

    Intermediate nodes are reset first, so a second pass carries only its own gradient: were a
    node's stale .grad from an earlier call left in, it would be pushed to its children again.
    """
    for node in order:
        if node._children:
            node.grad = 0.0
    order[-1].grad += 1.0
    for node in reversed(
        order
    ):  # every parent before its children: node.grad is complete
        grad = node.grad
        for child, local in zip(node._children, node._local_grads):
            child.grad += local * grad


def zero_grad(values: Iterable[Value]) -> None:
    """Set .grad = 0.0 on each value (gradients of leaves accumulate across backward() calls)."""
    for v in values:
        v.grad = 0.0


def numerical_grad(
    f: Callable[[list[Value]], Value], xs: Sequence[float], eps: float = 1e-6
) -> list[float]:
    """d f / d xs[i] for each i, by central differences: (f(x + h e_i) - f(x - h e_i)) / 2h.

    h = eps * max(1, |xs[i]|). The error is about h^2 * f''' / 6 (truncation) plus
    1e-16 * |f| / h (rounding): with eps = 1e-6, around 1e-10 relative for well-scaled f.
    """
    xs = [_real(x, "numerical_grad(xs)", "real numbers") for x in xs]
    grads = []
    for i, x in enumerate(xs):
        h = eps * max(1.0, abs(x))
        up = f([Value(x + h) if j == i else Value(v) for j, v in enumerate(xs)]).data
        down = f([Value(x - h) if j == i else Value(v) for j, v in enumerate(xs)]).data
        grads.append((up - down) / (2 * h))
    return grads


def check_gradients(
    f: Callable[[list[Value]], Value],
    xs: Sequence[float],
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
) -> list[tuple[float, float]]:
    """Run backward() on f(xs) and compare each input's .grad with numerical_grad(f, xs).

    Returns [(backprop, numerical), ...]; raises AssertionError naming the first input where
    |backprop - numerical| > atol + rtol * max(|backprop|, |numerical|).
    """
    inputs = [Value(x) for x in xs]
    f(inputs).backward()
    pairs = list(zip((v.grad for v in inputs), numerical_grad(f, xs, eps)))
    for i, (analytic, numeric) in enumerate(pairs):
        if not abs(analytic - numeric) <= atol + rtol * max(abs(analytic), abs(numeric)):
            raise AssertionError(
                f"gradient of input {i} (x = {xs[i]!r}): backward() gives {analytic!r}, "
                f"finite differences give {numeric!r}"
            )
    return pairs
