"""An array autograd: chapter 01's algorithm with a numpy array in every node.

    Tensor(data)             a float64 or float32 array node: .data, .grad, its inputs and a
                             gradient function; backward() runs the chain rule over the graph
    the ops                  add sub mul div neg pow (by a number), matmul (batched), linear,
                             sum mean, reshape transpose, indexing (gather, scatter-add back),
                             exp log tanh relu, astype, and three fused ones: rmsnorm, softmax
                             (with a mask: causal attention) and cross_entropy (p - onehot)
    topological_order(root)  every node root depends on, inputs first (explicit stack)
    make_node(data, op, children, grad_fn)   a new op's output: how every op above is built
    no_grad()                a block in which ops build no graph (sampling, evaluation)
    numerical_grad(f, arrays), check_gradients(f, arrays)   finite differences, the reference

Each op is a small pair, as in needle: a forward that computes the array, and a gradient
function that turns d(loss)/d(output) into d(loss)/d(input) for each input. Broadcasting is
handled once, for every op, in backward: a gradient is summed back to its input's shape
(``sum_to_shape``). Leaves (parameters and inputs) accumulate into their ``.grad`` in place,
``p.grad += g``, so the arrays an optimizer holds (chapter 08's flat buffers) stay the same
objects; intermediate nodes hold the gradient of the latest backward() only.

A node refers to its inputs, never to its outputs, and a gradient function closes over input
arrays only: the graph has no reference cycles, so it is freed when the loss is dropped.
"""

from __future__ import annotations

import contextlib
from numbers import Real
from typing import Any, Callable, Iterator, Sequence

import numpy as np

DTYPES = (np.float64, np.float32)
GradFn = Callable[[np.ndarray], Sequence["np.ndarray | None"]]

_grad_enabled = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside the block ops compute arrays only: no graph, nothing for backward()."""
    global _grad_enabled
    was, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = was


class Tensor:
    """A float array in a computation graph.

    requires_grad  leaves default to True (a parameter, or an input to differentiate by) and get
                   ``.grad = zeros``; an op's output requires a gradient if any input does.
                   A constant (``requires_grad=False``: a mask, targets) gets no gradient.
    """

    __slots__ = (
        "data",
        "grad",
        "requires_grad",
        "op",
        "_children",
        "_grad_fn",
        "__weakref__",
    )

    def __init__(self, data: Any, dtype: Any = None, requires_grad: bool = True) -> None:
        array = np.asarray(data, dtype=dtype)
        if array.dtype not in DTYPES:
            if dtype is not None or array.dtype.kind not in "iub":
                raise TypeError(
                    f"Tensor holds float64 or float32 numbers, got dtype {array.dtype}"
                )
            array = array.astype(np.float64)  # ints and bools become float64
        self.data: np.ndarray = array
        self.requires_grad = requires_grad
        self.grad: np.ndarray | None = np.zeros_like(array) if requires_grad else None
        self.op = ""  # the op that made it ("" for a leaf)
        self._children: tuple[Tensor, ...] = ()
        self._grad_fn: GradFn | None = None

    def __repr__(self) -> str:
        made = f", op={self.op!r}" if self.op else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{made})"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def item(self) -> float:
        return self.data.item()

    def numpy(self) -> np.ndarray:
        return self.data

    # ---- the ops as methods and operators (each defined once, below, as a function)

    def __add__(self, other: Any) -> Tensor:
        return add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return div(other, self)

    def __neg__(self) -> Tensor:
        return neg(self)

    def __pow__(self, exponent: float) -> Tensor:
        return power(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        raise TypeError(
            f"{base!r:.40} ** Tensor is not supported: the exponent is a number"
        )

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return getitem(self, index)

    def sum(
        self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
    ) -> Tensor:
        return reduce_sum(self, axis, keepdims)

    def mean(
        self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
    ) -> Tensor:
        return mean(self, axis, keepdims)

    def reshape(self, *shape: int) -> Tensor:
        return reshape(
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        )

    def transpose(self, *axes: int) -> Tensor:
        return transpose(self, axes or None)

    @property
    def T(self) -> Tensor:  # noqa: N802  (numpy's name)
        return transpose(self, None)

    def exp(self) -> Tensor:
        return exp(self)

    def log(self) -> Tensor:
        return log(self)

    def tanh(self) -> Tensor:
        return tanh(self)

    def relu(self) -> Tensor:
        return relu(self)

    def astype(self, dtype: Any) -> Tensor:
        return astype(self, dtype)

    # ---- the backward pass

    def backward(self, grad: Any = None) -> None:
        """Fill in .grad = d(self)/d(node) for every node self depends on.

        ``grad`` is d(loss)/d(self), 1 by default (then self must hold one number). Leaves
        accumulate, as in chapter 01 and PyTorch: zero them between steps.
        """
        if not self.requires_grad:
            raise ValueError(
                "backward() on a Tensor that requires no gradient (a constant)"
            )
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() needs a gradient for a Tensor of shape {self.shape}: "
                    "pass one, or reduce it to one number first (.sum())"
                )
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(
                f"backward(grad): grad is {grad.shape}, the Tensor {self.shape}"
            )
        backpropagate(topological_order(self), grad)


def topological_order(root: Tensor) -> list[Tensor]:
    """Every node root depends on (root included), each after all of its children: chapter
    01's depth-first search with an explicit stack, so long graphs need no recursion.
    Constants (requires_grad False) are left out: no gradient goes to them."""
    order: list[Tensor] = []
    visited = {id(root)}
    stack = [(root, iter(root._children))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if child.requires_grad and id(child) not in visited:
                visited.add(id(child))
                stack.append((child, iter(child._children)))
                break
        else:
            stack.pop()
            order.append(node)
    return order


def backpropagate(order: list[Tensor], grad: np.ndarray) -> None:
    """The chain rule over a topological order whose last node is the output.

    Intermediate gradients start empty (None): the first contribution is stored as it is and
    later ones are added into a new array, never in place, because one array may be shared
    (add hands the same g to both inputs). Leaves add into their own .grad in place.
    """
    for node in order:
        if node._children:
            node.grad = None
    root = order[-1]
    if root._children:
        root.grad = grad
    else:
        root.grad += grad
    for node in reversed(order):  # every output before its inputs: node.grad is complete
        if node._grad_fn is None or node.grad is None:
            continue
        for child, g in zip(node._children, node._grad_fn(node.grad)):
            if g is None or not child.requires_grad:
                continue
            g = sum_to_shape(g, child.data.shape)
            if not child._children:
                child.grad += g  # in place: optimizers hold these arrays
            elif child.grad is None:
                child.grad = g
            else:
                child.grad = child.grad + g


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo broadcasting: sum g over the axes that broadcasting added or stretched from 1."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


# --------------------------------------------------------------------------------------------
# making nodes, and checking what an op is given


def make_node(
    data: np.ndarray, op: str, children: tuple[Tensor, ...], grad_fn: GradFn
) -> Tensor:
    """The output of an op: a node with its inputs and gradient function, if any input needs
    a gradient (and grad mode is on); a constant otherwise.

    ``grad_fn(g)`` gets d(loss)/d(output) and returns one gradient per child (None: none), each
    of the output's shape or the child's (backward sums broadcast axes away)."""
    out = Tensor.__new__(Tensor)
    out.data = data
    out.op = op
    if _grad_enabled and any(c.requires_grad for c in children):
        out.requires_grad, out.grad = True, None
        out._children, out._grad_fn = children, grad_fn
    else:
        out.requires_grad, out.grad = False, None
        out._children, out._grad_fn = (), None
    return out


def _tensor(x: Any, op: str, like: Tensor | None = None) -> Tensor:
    """x as a Tensor: a Tensor itself; a Python number or a numpy array becomes a constant in
    the dtype of ``like`` (numbers) or its own (arrays: then the dtypes must agree)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, bool) or not isinstance(x, (Real, np.ndarray)):
        raise TypeError(
            f"{op}: expected a Tensor, a number or an array, got {type(x).__name__}"
        )
    if isinstance(x, np.ndarray) and x.dtype in DTYPES:
        return Tensor(x, requires_grad=False)
    dtype = like.dtype if like is not None else np.float64
    return Tensor(
        np.asarray(float(x) if isinstance(x, Real) else x, dtype), requires_grad=False
    )


def _pair(a: Any, b: Any, op: str) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors of one dtype, with shapes that broadcast."""
    a = _tensor(a, op, b if isinstance(b, Tensor) else None)
    b = _tensor(b, op, a)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: dtypes differ ({a.dtype} and {b.dtype}); convert one with .astype(), "
            "the course never upcasts silently"
        )
    return a, b


def _broadcast_error(op: str, a: Tensor, b: Tensor) -> ValueError:
    return ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast")


def _number(x: Any, op: str) -> float:
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{op}: expected a real number, got {type(x).__name__} {x!r:.40}")
    return float(x)  # a Python float keeps a float32 array float32 (NEP 50)


# --------------------------------------------------------------------------------------------
# elementwise arithmetic: the gradient of each input, before sum_to_shape


def add(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b, "add")
    try:
        data = a.data + b.data
    except ValueError:
        raise _broadcast_error("add", a, b) from None
    return make_node(data, "add", (a, b), lambda g: (g, g))


def sub(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b, "sub")
    try:
        data = a.data - b.data
    except ValueError:
        raise _broadcast_error("sub", a, b) from None
    return make_node(data, "sub", (a, b), lambda g: (g, -g))


def mul(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b, "mul")
    x, y = a.data, b.data
    try:
        data = x * y
    except ValueError:
        raise _broadcast_error("mul", a, b) from None
    return make_node(data, "mul", (a, b), lambda g: (g * y, g * x))


def div(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b, "div")
    x, y = a.data, b.data
    try:
        data = x / y
    except ValueError:
        raise _broadcast_error("div", a, b) from None
    return make_node(data, "div", (a, b), lambda g: (g / y, -g * data / y))


def neg(a: Tensor) -> Tensor:
    return make_node(-a.data, "neg", (a,), lambda g: (-g,))


def power(a: Tensor, exponent: float) -> Tensor:
    """a ** n for a number n (a Tensor exponent is not supported: write exp(n * log(a)))."""
    if isinstance(exponent, Tensor):
        raise TypeError(
            "Tensor ** Tensor is not supported: the exponent must be a number"
        )
    n, x = _number(exponent, "pow"), a.data
    if not n.is_integer() and (x < 0).any():
        raise ValueError(
            f"pow: a negative base to the fractional power {n} has no real value"
        )
    if n == 0:
        return make_node(np.ones_like(x), "pow", (a,), lambda g: (None,))
    return make_node(x**n, "pow", (a,), lambda g: (g * (n * x ** (n - 1)),))


def exp(a: Tensor) -> Tensor:
    e = np.exp(a.data)
    return make_node(e, "exp", (a,), lambda g: (g * e,))


def log(a: Tensor) -> Tensor:
    x = a.data
    if not (x > 0).all():  # also catches nan
        raise ValueError("log of a Tensor with entries <= 0: log needs data > 0")
    return make_node(np.log(x), "log", (a,), lambda g: (g / x,))


def tanh(a: Tensor) -> Tensor:
    t = np.tanh(a.data)
    return make_node(t, "tanh", (a,), lambda g: (g * (1 - t * t),))


def relu(a: Tensor) -> Tensor:
    x = a.data
    return make_node(np.maximum(x, 0), "relu", (a,), lambda g: (g * (x > 0),))


def astype(a: Tensor, dtype: Any) -> Tensor:
    """The same numbers in another float dtype: the one way to mix float32 and float64."""
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise TypeError(f"astype: Tensor holds float64 or float32, got {dtype}")
    src = a.dtype
    return make_node(a.data.astype(dtype), "astype", (a,), lambda g: (g.astype(src),))


# --------------------------------------------------------------------------------------------
# matrix products


def _swap(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def matmul(a: Any, b: Any) -> Tensor:
    """a @ b with numpy's rules: the last two axes multiply, the leading ones broadcast.

    The gradients are g @ b^T and a^T @ g; 1-D operands are treated as a row (a) or a column
    (b) on the way back, as numpy treats them on the way in."""
    a, b = _pair(a, b, "matmul")
    x, y = a.data, b.data
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"matmul: needs arrays of 1 or more dimensions, got {a.shape} @ {b.shape}"
        )
    try:
        data = x @ y
    except ValueError:
        raise ValueError(
            f"matmul: shapes {a.shape} @ {b.shape} do not fit (inner sizes "
            f"{x.shape[-1]} and {y.shape[0 if y.ndim == 1 else -2]}, or batch axes differ)"
        ) from None

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        g2 = g
        if y.ndim == 1:
            g2 = g2[..., None]
        if x.ndim == 1:
            g2 = g2[..., None, :]
        ga = sum_to_shape(g2 @ _swap(y2), x2.shape).reshape(x.shape)
        gb = sum_to_shape(_swap(x2) @ g2, y2.shape).reshape(y.shape)
        return ga, gb

    return make_node(data, "matmul", (a, b), grad_fn)


def linear(x: Tensor, w: Tensor) -> Tensor:
    """x @ w.T for a weight stored (outputs, inputs), as ``y = W x`` reads: one node instead of
    a transpose and a matmul. x is (..., inputs); the gradient for w sums over every leading
    axis at once (one matrix product over all the positions)."""
    x, w = _pair(x, w, "linear")
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"linear: input {x.shape} and weight {w.shape} do not fit: the weight must be "
            "(outputs, inputs) with inputs = the input's last axis"
        )
    # as one 2-D product over all the positions: numpy's stacked matmul on a 3-D array makes
    # one small BLAS call per leading index (or none at all, for a strided array)
    shape, wd = x.shape, w.data
    x2 = x.data.reshape(-1, shape[-1])
    data = (x2 @ wd.T).reshape(*shape[:-1], wd.shape[0])

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g2 = g.reshape(-1, g.shape[-1])
        return (g2 @ wd).reshape(shape), g2.T @ x2

    return make_node(data, "linear", (x, w), grad_fn)


# --------------------------------------------------------------------------------------------
# reductions and shapes


def _axes(axis: int | tuple[int, ...] | None, ndim: int, op: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if any(not -ndim <= ax < ndim for ax in axes) or (ndim == 0 and axes):
        raise ValueError(f"{op}: axis {axis} is out of range for {ndim} dimensions")
    return tuple(sorted(ax % ndim for ax in axes))


def reduce_sum(
    a: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
) -> Tensor:
    """The sum over ``axis`` (all by default); its gradient copies g back over those axes."""
    axes, shape = _axes(axis, a.ndim, "sum"), a.shape
    data = a.data.sum(axis=axes, keepdims=keepdims)

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray]:
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, shape),)

    return make_node(data, "sum", (a,), grad_fn)


def mean(
    a: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
) -> Tensor:
    axes = _axes(axis, a.ndim, "mean")
    count = int(np.prod([a.shape[ax] for ax in axes]))
    if count == 0:
        raise ValueError(f"mean: no elements to average over axis {axis} of {a.shape}")
    return reduce_sum(a, axes, keepdims) * (1.0 / count)


def reshape(a: Tensor, shape: Sequence[int]) -> Tensor:
    old = a.shape
    try:
        data = a.data.reshape(tuple(shape))
    except ValueError:
        raise ValueError(
            f"reshape: cannot reshape {old} ({a.data.size} numbers) to {tuple(shape)}"
        ) from None
    return make_node(data, "reshape", (a,), lambda g: (g.reshape(old),))


def transpose(a: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """numpy's transpose: axes reversed, or permuted as ``axes`` says."""
    ndim = a.ndim
    if axes is None:
        axes = tuple(range(ndim - 1, -1, -1))
    axes = tuple(ax % ndim if -ndim <= ax < ndim else ax for ax in axes) if ndim else ()
    if sorted(axes) != list(range(ndim)):
        raise ValueError(
            f"transpose: {axes} is not a permutation of the axes of {a.shape}"
        )
    inverse = tuple(axes.index(i) for i in range(ndim))  # where each axis went
    return make_node(
        a.data.transpose(axes), "transpose", (a,), lambda g: (g.transpose(inverse),)
    )


def _basic(index: Any) -> bool:
    """Slices and ints only: each element is picked at most once."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        isinstance(p, (slice, type(Ellipsis), type(None)))
        or (isinstance(p, (int, np.integer)) and not isinstance(p, bool))
        for p in parts
    )


def getitem(a: Tensor, index: Any) -> Tensor:
    """a[index]: slices, ints and integer arrays (gather: an embedding's rows, wte[tokens]).

    The gradient scatters g back into zeros of a's shape; with integer arrays the same row can
    be picked twice (a name with two a's), so the scatter adds (np.add.at) instead of writing."""
    parts = index if isinstance(index, tuple) else (index,)
    if any(isinstance(p, Tensor) for p in parts):
        raise TypeError(
            "getitem: index with integers or integer numpy arrays, not a Tensor"
        )
    try:
        data = a.data[index]
    except IndexError as error:
        raise IndexError(
            f"getitem: index out of range for shape {a.shape}: {error}"
        ) from None
    shape, dtype, basic = a.shape, a.dtype, _basic(index)

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray]:
        out = np.zeros(shape, dtype)
        if basic:
            out[index] = g
        else:
            np.add.at(out, index, g)
        return (out,)

    return make_node(np.asarray(data), "getitem", (a,), grad_fn)


# --------------------------------------------------------------------------------------------
# fused ops: one node each, the gradient derived by hand (the chapter derives each one)


def rmsnorm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """y = x * s over the last axis, s = (mean(x^2) + eps)^-1/2 (no learned gain).

    Gradient: dx = s * (g - y * mean(g * y)): the direct path s * g, minus what changing x_j
    does to the scale shared by every element of the row."""
    eps, xd = _number(eps, "rmsnorm"), x.data
    inv_n = (
        1.0 / xd.shape[-1]
    )  # a sum times 1/n: ndarray.mean is a Python function, slower
    s = 1.0 / np.sqrt((xd * xd).sum(axis=-1, keepdims=True) * inv_n + eps)
    y = xd * s

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray]:
        return (s * (g - y * ((g * y).sum(axis=-1, keepdims=True) * inv_n)),)

    return make_node(y, "rmsnorm", (x,), grad_fn)


def softmax(x: Tensor, mask: np.ndarray | None = None) -> Tensor:
    """softmax over the last axis; where ``mask`` (a bool array that broadcasts to x) is False
    the probability is exactly 0: attention's causal mask, no look at later positions.

    Gradient: dx = p * (g - sum(g * p)) over the last axis (masked entries: p = 0, so 0)."""
    xd = x.data
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"softmax: the mask must be a bool array, got {mask.dtype}")
        try:
            xd = np.where(mask, xd, -np.inf)
        except ValueError:
            raise ValueError(
                f"softmax: mask {mask.shape} does not broadcast to {x.shape}"
            ) from None
    top = xd.max(axis=-1, keepdims=True)
    if mask is not None and not np.isfinite(top).all():  # cheaper than checking the mask
        raise ValueError(
            "softmax: a row of the mask is all False (nothing to attend to), or x is not finite"
        )
    e = np.exp(xd - top)
    p = e / e.sum(axis=-1, keepdims=True)

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray]:
        return (p * (g - (g * p).sum(axis=-1, keepdims=True)),)

    return make_node(p, "softmax", (x,), grad_fn)


def cross_entropy(
    logits: Tensor, targets: np.ndarray, weights: np.ndarray | None = None
) -> Tensor:
    """sum_i w_i * -log softmax(logits_i)[targets_i]: one number (w_i = 1/N, the mean, by
    default; a loss mask divided by its count gives the mean over real tokens).

    logits (..., V), targets ints of shape (...), weights floats of shape (...). Gradient:
    d(loss)/d(logits_i) = w_i * (p_i - onehot(targets_i)).
    """
    z = logits.data
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    if z.ndim < 1 or targets.shape != z.shape[:-1]:
        raise ValueError(
            f"cross_entropy: logits {z.shape} need targets of shape {z.shape[:-1]}, "
            f"got {targets.shape}"
        )
    vocab = z.shape[-1]
    if targets.size and (targets.min() < 0 or targets.max() >= vocab):
        raise ValueError(
            f"cross_entropy: targets must be in [0, {vocab}), got {targets.max()}"
        )
    if weights is None:
        weights = np.full(targets.shape, 1.0 / max(targets.size, 1), z.dtype)
    weights = np.asarray(weights)
    if weights.shape != targets.shape:
        raise ValueError(
            f"cross_entropy: weights {weights.shape}, targets {targets.shape}"
        )
    if weights.dtype != z.dtype:
        weights = weights.astype(z.dtype)
    # over the positions flattened: fancy indexing beats take_along_axis, a Python function
    z2 = z.reshape(-1, vocab)
    rows, cols = np.arange(z2.shape[0]), targets.reshape(-1)
    top = z2.max(axis=-1, keepdims=True)
    e = np.exp(z2 - top)
    total = e.sum(axis=-1, keepdims=True)
    losses = np.log(total[:, 0]) + top[:, 0] - z2[rows, cols]  # -log p(target), no log p
    w = weights.reshape(-1)
    data = np.asarray(w @ losses, z.dtype)

    def grad_fn(g: np.ndarray) -> tuple[np.ndarray]:
        p = e / total
        p[rows, cols] -= 1.0
        return ((p * (w[:, None] * g)).reshape(z.shape),)

    return make_node(data, "cross_entropy", (logits,), grad_fn)


# --------------------------------------------------------------------------------------------
# finite differences: the slow, obvious reference every gradient is checked against


def numerical_grad(
    f: Callable[[list[Tensor]], Tensor], arrays: Sequence[np.ndarray], eps: float = 1e-6
) -> list[np.ndarray]:
    """d f / d arrays[k][i] for every element, by central differences (f returns one number).

    h = eps * max(1, |x|): in float64 the error is about 1e-10 relative for well-scaled f."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    grads = []
    for k, a in enumerate(arrays):
        grad = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            x = a[i]
            h = eps * max(1.0, abs(x))
            values = []
            for shifted in (x + h, x - h):
                a[i] = shifted
                with no_grad():
                    values.append(
                        f([Tensor(b, requires_grad=False) for b in arrays]).item()
                    )
            a[i] = x
            grad[i] = (values[0] - values[1]) / (2 * h)
        grads.append(grad)
    return grads


def check_gradients(
    f: Callable[[list[Tensor]], Tensor],
    arrays: Sequence[np.ndarray],
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
) -> list[np.ndarray]:
    """Run backward() on f(arrays) (float64) and compare each input's .grad with
    numerical_grad; raises AssertionError naming the first input and element that disagree.
    Returns the gradients backward() gave."""
    inputs = [Tensor(np.array(a, dtype=np.float64)) for a in arrays]
    out = f(inputs)
    if not isinstance(out, Tensor) or out.data.size != 1:
        raise ValueError("check_gradients: f must return a Tensor holding one number")
    out.backward()
    for k, (t, numeric) in enumerate(zip(inputs, numerical_grad(f, arrays, eps))):
        bad = np.abs(t.grad - numeric) > atol + rtol * np.maximum(
            np.abs(t.grad), np.abs(numeric)
        )
        if bad.any():
            i = tuple(int(j) for j in np.argwhere(bad)[0])
            raise AssertionError(
                f"gradient of input {k} at {i}: backward() gives {t.grad[i]!r}, "
                f"finite differences give {numeric[i]!r}"
            )
    return [t.grad for t in inputs]
