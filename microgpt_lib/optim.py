"""Optimizers that allocate nothing per step: SGD, Adam and AdamW on numpy parameters.

    Parameter(array)            the plain parameter: .data and .grad, numpy arrays of one shape
    flatten_(params)            put every parameter (and gradient) into one contiguous buffer,
                                each parameter a view of it: one step is one pass over memory
    decay_groups(params, wd)    nanoGPT's rule: decay the >= 2-D weights, not the rest
    SGD, Adam, AdamW            torch.optim's names, defaults and update rules; step() and
                                zero_grad() work in place; state_dict() / load_state_dict()
    clip_grad_norm(params, max_norm)   scale gradients in place to a total norm (torch's rule)
    constant_lr, linear_decay_lr, warmup_cosine_lr   learning-rate schedules
    ValueAdam                   microgpt's Adam on scalar Values (chapter 02)

Every optimizer has four implementations that give the same numbers (impl=...):
    "naive"    per parameter, numpy expressions with temporaries (an allocation per operation)
    "inplace"  per parameter, numpy with out= into preallocated scratch: no allocation
    "foreach"  the same numpy calls, once over each group's flat buffer (torch's foreach)
    "fused"    one numba loop over each group's flat buffer: one pass over memory (torch's fused)
The default, "auto", is "fused" when the group's parameters are flat (flatten_) and
"inplace" otherwise. Updates follow torch's arithmetic operation by operation, so in float64
they agree with torch.optim to rounding. A gradient that is not finite stops step() with a
FloatingPointError before any weight is written.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any, Callable, Iterable, Sequence

import numba
import numpy as np

IMPLS = ("naive", "inplace", "foreach", "fused")


class Parameter:
    """A trainable array: ``.data`` (the values) and ``.grad`` (zeros to start), one shape."""

    def __init__(self, data: Any) -> None:
        array = np.asarray(data)
        self.data = array.astype(array.dtype if array.dtype.kind == "f" else np.float64)
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


# --------------------------------------------------------------------------------------------
# naming and grouping parameters


def named_parameters(params: Any, start: int = 0) -> list[tuple[str, Any]]:
    """(name, parameter) pairs from a list, a list of pairs, a dict or a config.GPTParams.

    A plain list's parameters are named by position, counting from ``start``."""
    if hasattr(params, "named_parameters"):
        return list(params.named_parameters())
    if isinstance(params, dict):
        return list(params.items())
    params = list(params)
    if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
        return [(str(name), p) for name, p in params]
    return [(str(i), p) for i, p in enumerate(params, start)]


def decay_groups(params: Any, weight_decay: float) -> list[dict[str, Any]]:
    """nanoGPT's parameter groups: matrices (>= 2-D) decay, vectors and scalars do not."""
    named = named_parameters(params)
    decay = [(n, p) for n, p in named if np.ndim(p.data) >= 2]
    no_decay = [(n, p) for n, p in named if np.ndim(p.data) < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    return groups + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])


def flatten_(params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Move every parameter's data and gradient into one contiguous buffer each, in order;
    each parameter's .data and .grad become views of them. Returns (data, grad) buffers.

    Param groups (dicts with "params") are laid out group after group, so that each group is
    one contiguous slice, which is what the foreach and fused implementations need.
    """
    if isinstance(params, list) and params and isinstance(params[0], dict):
        named = [np_ for group in params for np_ in named_parameters(group["params"])]
    else:
        named = named_parameters(params)
    if not named:
        raise ValueError("no parameters to flatten")
    dtypes = {p.data.dtype for _, p in named}
    if len(dtypes) != 1:
        raise TypeError(
            f"flatten_ needs one dtype, the parameters have {sorted(map(str, dtypes))}"
        )
    total = sum(p.data.size for _, p in named)
    data, grad = (
        np.empty(total, dtypes.pop()),
        np.zeros(total, next(iter(named))[1].data.dtype),
    )
    offset = 0
    for _, p in named:
        size, shape = p.data.size, p.data.shape
        data[offset : offset + size] = p.data.ravel()
        grad[offset : offset + size] = np.asarray(p.grad).ravel()
        p.data = data[offset : offset + size].reshape(shape)
        p.grad = grad[offset : offset + size].reshape(shape)
        offset += size
    return data, grad


def flat_segment(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The one 1-D buffer slice that the arrays tile in order, or None if they do not."""
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    origin = base.__array_interface__["data"][0]
    start = (arrays[0].__array_interface__["data"][0] - origin) // base.itemsize
    position = start
    for a in arrays:
        address = a.__array_interface__["data"][0]
        if (
            a.base is not base
            or not a.flags.c_contiguous
            or address != origin + position * base.itemsize
        ):
            return None
        position += a.size
    return base[start:position]


# --------------------------------------------------------------------------------------------
# the fused kernels: one loop, every array read and written once


def adam_loop(
    p, g, m, v, lr, weight, beta2, eps, weight_decay, decoupled, step_size, bc2_sqrt
):
    """One Adam(W) step over flat arrays, element by element, in torch's order of operations."""
    shrink = 1.0 - lr * weight_decay
    for i in numba.prange(p.shape[0]):  # every element on its own: threads need no care
        pi, gi = p[i], g[i]
        if decoupled:
            pi = pi * shrink  # AdamW: decay the weight itself
        elif weight_decay != 0.0:
            gi = gi + weight_decay * pi  # Adam: L2 penalty folded into the gradient
        mi = m[i]
        if weight < 0.5:  # torch's lerp, both branches
            mi = mi + weight * (gi - mi)
        else:
            mi = gi - (gi - mi) * (1.0 - weight)
        vi = v[i] * beta2 + ((1.0 - beta2) * gi) * gi
        denom = math.sqrt(vi) / bc2_sqrt + eps
        p[i] = pi + (-step_size * mi) / denom
        m[i] = mi
        v[i] = vi


def sgd_loop(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One SGD step over flat arrays, in torch's order of operations."""
    for i in numba.prange(p.shape[0]):
        d = g[i]
        if weight_decay != 0.0:
            d = d + weight_decay * p[i]
        if momentum != 0.0:
            b = d if first else buf[i] * momentum + (1.0 - dampening) * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] = p[i] + (-lr) * d


def sum_of_squares_loop(x):
    """The sum of x * x: finite exactly when every element is (and none is too large to square)."""
    total = 0.0
    for i in numba.prange(x.shape[0]):
        total += x[i] * x[i]
    return total


# Each loop is compiled twice: on one thread for small buffers, where starting threads would
# cost more than the whole update (microgpt's 4,192 numbers take microseconds), and on numba's
# threads from PARALLEL_MIN elements on. Same arithmetic, same numbers. error_model="numpy":
# a division by zero gives inf instead of raising, so numba need not test every divisor, and
# without that test the loop vectorizes (Adam's divisor is at least eps > 0 anyway).
PARALLEL_MIN = 1 << 16
EXACT = {"error_model": "numpy"}
adam_kernel = numba.njit(cache=True, **EXACT)(adam_loop)
sgd_kernel = numba.njit(cache=True, **EXACT)(sgd_loop)
adam_kernel_parallel = numba.njit(parallel=True, **EXACT)(
    adam_loop
)  # uncached: same source
sgd_kernel_parallel = numba.njit(parallel=True, **EXACT)(sgd_loop)
# The check may add in any order (reassoc: SIMD partial sums), but must keep nan and inf
# meaning what they mean, so no other fast-math flag: "nnan"/"ninf" would let the compiler
# assume them away.
CHECK = {"error_model": "numpy", "fastmath": {"reassoc"}}
sum_of_squares = numba.njit(cache=True, **CHECK)(sum_of_squares_loop)
sum_of_squares_parallel = numba.njit(parallel=True, **CHECK)(sum_of_squares_loop)


# --------------------------------------------------------------------------------------------
# the optimizers


def _check_number(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (
        value < low
        or (low_open and value == low)
        or value > high
        or (high_open and value == high)
    ):
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {bounds}, got {value!r}")
    return float(value)


class Optimizer:
    """What SGD and Adam share: parameter groups, their checks, zero_grad, state_dict.

    params: a list of parameters (anything with numpy .data and .grad of one shape), a list of
    (name, parameter) pairs, a config.GPTParams, or a list of torch-style group dicts
    {"params": ..., "lr": ..., ...} whose keys override the defaults.
    """

    defaults: dict[str, Any] = {}
    moments: tuple[str, ...] = ()  # per-parameter state arrays, named as torch names them

    def __init__(
        self, params: Any, impl: str = "auto", check_finite: bool = True, **settings: Any
    ) -> None:
        if impl not in ("auto", *IMPLS):
            raise ValueError(
                f"impl must be 'auto' or one of {', '.join(IMPLS)}, got {impl!r}"
            )
        self.impl = impl
        # check_finite=False skips the one read of every gradient that guards the weights
        # (torch.optim does not check): for a caller that checked already, e.g. by clipping
        self.check_finite = check_finite
        defaults = {**self.defaults, **settings}
        self._check(defaults)
        raw = (
            params
            if isinstance(params, list) and params and isinstance(params[0], dict)
            else [{"params": params}]
        )
        self.param_groups: list[dict[str, Any]] = []
        count = 0  # unnamed parameters are numbered across groups, as torch numbers them
        for raw_group in raw:
            group = {**defaults, **{k: v for k, v in raw_group.items() if k != "params"}}
            self._check(group)
            named = named_parameters(raw_group["params"], start=count)
            group["params"] = self._checked_params(named)
            count += len(named)
            self.param_groups.append(group)
        names = [name for group in self.param_groups for name, _ in group["params"]]
        if not names:
            raise ValueError("the optimizer got an empty parameter list")
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique across groups")
        self.step_count = 0
        for group in self.param_groups:
            self._init_state(group)

    def _checked_params(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        for name, p in named:
            data, grad = getattr(p, "data", None), getattr(p, "grad", None)
            if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
                raise TypeError(
                    f"parameter {name!r}: .data must be a float numpy array, "
                    f"got {type(data).__name__}"
                )
            if not isinstance(grad, np.ndarray):
                raise TypeError(f"parameter {name!r} has no .grad array (got {grad!r})")
            if grad.shape != data.shape or grad.dtype != data.dtype:
                raise ValueError(
                    f"parameter {name!r}: .grad is {grad.dtype}{list(grad.shape)}, "
                    f".data is {data.dtype}{list(data.shape)}; they must match"
                )
        return named

    def _check(self, settings: dict[str, Any]) -> None:
        _check_number("lr", settings["lr"], 0.0)
        _check_number("weight_decay", settings["weight_decay"], 0.0)

    def _impl_for(self, group: dict[str, Any]) -> str:
        flat = group["flat"] is not None
        impl = ("fused" if flat else "inplace") if self.impl == "auto" else self.impl
        if impl in ("foreach", "fused") and not flat:
            raise ValueError(
                f"impl={impl!r} runs over one flat buffer per group: call "
                "optim.flatten_(params) before building the optimizer"
            )
        return impl

    def _init_state(self, group: dict[str, Any]) -> None:
        datas = [p.data for _, p in group["params"]]
        grads = [p.grad for _, p in group["params"]]
        segment, grad_segment = flat_segment(datas), flat_segment(grads)
        group["flat"] = (
            (segment, grad_segment)
            if segment is not None and grad_segment is not None
            else None
        )
        impl = group["impl"] = self._impl_for(group)  # fail now, not at the first step
        size = segment.size if group["flat"] else 0
        group["buffers"] = {}  # name -> flat array (flat groups) ...
        group["state"] = {}  # parameter name -> {moment name: array}
        for moment in self.moments:
            flat = np.zeros(size, datas[0].dtype) if group["flat"] else None
            group["buffers"][moment] = flat
            offset = 0
            for (name, p), data in zip(group["params"], datas):
                array = (
                    flat[offset : offset + data.size].reshape(data.shape)
                    if group["flat"]
                    else np.zeros_like(data)
                )
                group["state"].setdefault(name, {})[moment] = array
                offset += data.size
        # scratch, allocated once and only where it is used: foreach works in two flat arrays,
        # inplace in two per parameter; naive makes its temporaries, fused keeps them in registers
        group["flat_scratch"] = (
            (np.empty(size, datas[0].dtype), np.empty(size, datas[0].dtype))
            if impl == "foreach"
            else None
        )
        group["scratch"] = (
            ([np.empty_like(d) for d in datas], [np.empty_like(d) for d in datas])
            if impl == "inplace"
            else (repeat(None), repeat(None))
        )

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place (the arrays stay the same objects)."""
        for group in self.param_groups:
            if group["flat"] is not None:  # one contiguous buffer: one fill
                group["flat"][1].fill(0.0)
                continue
            for _, p in group["params"]:
                p.grad.fill(0.0)

    def step(self) -> None:
        """One update of every parameter from its .grad, in place."""
        for group in self.param_groups if self.check_finite else ():
            self._check_finite(group)
        self.step_count += 1
        for group in self.param_groups:
            self._step_group(group, group["impl"])

    @staticmethod
    def _check_finite(group: dict[str, Any]) -> None:
        # A sum of squares is one scalar, so no array is allocated, and a nan or inf anywhere
        # makes it non-finite (so do gradients too large to square: |g| > 1e154 in float64).
        # One parameter at a time, so that a step holds no list that grows with the model.
        if group["flat"] is not None:
            g = group["flat"][1]
            check = sum_of_squares if g.size < PARALLEL_MIN else sum_of_squares_parallel
            if math.isfinite(check(g)):
                return
        for name, p in group["params"]:
            g = p.grad.reshape(-1)
            if not math.isfinite(float(np.dot(g, g))):
                raise FloatingPointError(
                    f"the gradient of parameter {name!r} is not finite (inf or nan, or too "
                    "large to square): the step was not taken, no weight was changed"
                )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as copies: kind, step count, groups, moments."""
        return {
            "kind": type(self).__name__,
            "step": self.step_count,
            "param_groups": [
                {
                    **{k: v for k, v in g.items() if k in self.defaults},
                    "params": [name for name, _ in g["params"]],
                }
                for g in self.param_groups
            ],
            "state": {
                name: {k: a.copy() for k, a in moments.items()}
                for g in self.param_groups
                for name, moments in g["state"].items()
            },
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict() in place, after checking it belongs to this optimizer."""
        if state.get("kind") != type(self).__name__:
            raise ValueError(
                f"this is a {type(self).__name__} optimizer; the state is from "
                f"{state.get('kind')!r}"
            )
        ours = [[name for name, _ in g["params"]] for g in self.param_groups]
        theirs = [list(g["params"]) for g in state["param_groups"]]
        if ours != theirs:
            raise ValueError(
                f"the state's parameters {theirs} are not this optimizer's {ours}"
            )
        for group in self.param_groups:
            for name, moments in group["state"].items():
                for moment, array in moments.items():
                    saved = np.asarray(state["state"][name][moment])
                    if saved.shape != array.shape:
                        raise ValueError(
                            f"state {moment!r} of {name!r} has shape "
                            f"{list(saved.shape)}, the parameter {list(array.shape)}"
                        )
                    array[...] = saved
        for group, saved in zip(self.param_groups, state["param_groups"]):
            group.update({k: saved[k] for k in self.defaults})
            self._check(group)
        self.step_count = int(state["step"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay,
    as torch.optim.SGD (its defaults; the first step copies the gradient into the buffer)."""

    defaults = {
        "lr": 1e-3,
        "momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
    }
    moments = ("momentum_buffer",)

    def _check(self, settings: dict[str, Any]) -> None:
        super()._check(settings)
        _check_number("momentum", settings["momentum"], 0.0)
        _check_number("dampening", settings["dampening"], 0.0)
        if settings["nesterov"] and (
            settings["momentum"] <= 0 or settings["dampening"] != 0
        ):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")

    def _step_group(self, group: dict[str, Any], impl: str) -> None:
        lr, mu, damp = (
            float(group["lr"]),
            float(group["momentum"]),
            float(group["dampening"]),
        )
        wd, nesterov, first = (
            float(group["weight_decay"]),
            bool(group["nesterov"]),
            self.step_count == 1,
        )
        if impl == "fused":
            (p, g), buf = group["flat"], group["buffers"]["momentum_buffer"]
            kernel = sgd_kernel if p.size < PARALLEL_MIN else sgd_kernel_parallel
            kernel(p, g, buf, lr, mu, damp, wd, nesterov, first)
            return
        if impl == "foreach":
            (p, g), buf = group["flat"], group["buffers"]["momentum_buffer"]
            triples = [(p, g, buf, *group["flat_scratch"])]
        else:
            triples = (  # a generator: the step holds nothing that grows with the model
                (p.data, p.grad, group["state"][name]["momentum_buffer"], s1, s2)
                for (name, p), s1, s2 in zip(group["params"], *group["scratch"])
            )
        for p, g, buf, d, tmp in triples:
            if impl == "naive":
                d = g + wd * p if wd else g
                if mu:
                    buf[...] = d if first else buf * mu + (1.0 - damp) * d
                    d = d + mu * buf if nesterov else buf
                p[...] = p + (-lr) * d
                continue
            if wd:
                np.multiply(p, wd, out=d)
                np.add(g, d, out=d)
            else:
                np.copyto(d, g)
            if mu:
                if first:
                    np.copyto(buf, d)
                else:
                    np.multiply(buf, mu, out=buf)
                    np.multiply(d, 1.0 - damp, out=tmp)
                    np.add(buf, tmp, out=buf)
                if nesterov:
                    np.multiply(buf, mu, out=tmp)
                    np.add(d, tmp, out=d)
                else:
                    np.copyto(d, buf)
            np.multiply(d, -lr, out=d)
            np.add(p, d, out=p)


class Adam(Optimizer):
    """Adam with bias correction by step count and L2 weight decay folded into the gradient,
    as torch.optim.Adam (its defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8)."""

    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    moments = ("exp_avg", "exp_avg_sq")
    decoupled = False  # AdamW: True

    def _check(self, settings: dict[str, Any]) -> None:
        super()._check(settings)
        betas = settings["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_number("beta1", betas[0], 0.0, 1.0)
        _check_number("beta2", betas[1], 0.0, 1.0)
        _check_number("eps", settings["eps"], 0.0, low_open=True)

    def _step_group(self, group: dict[str, Any], impl: str) -> None:
        lr, eps, wd = (
            float(group["lr"]),
            float(group["eps"]),
            float(group["weight_decay"]),
        )
        beta1, beta2 = (float(b) for b in group["betas"])
        weight, t = 1.0 - beta1, self.step_count
        step_size = lr / (1.0 - beta1**t)
        bc2_sqrt = math.sqrt(1.0 - beta2**t)
        if impl == "fused":
            (p, g), m, v = (
                group["flat"],
                group["buffers"]["exp_avg"],
                group["buffers"]["exp_avg_sq"],
            )
            kernel = adam_kernel if p.size < PARALLEL_MIN else adam_kernel_parallel
            kernel(
                p,
                g,
                m,
                v,
                lr,
                weight,
                beta2,
                eps,
                wd,
                self.decoupled,
                step_size,
                bc2_sqrt,
            )
            return
        if impl == "foreach":
            (p, g), m, v = (
                group["flat"],
                group["buffers"]["exp_avg"],
                group["buffers"]["exp_avg_sq"],
            )
            work = [(p, g, m, v, *group["flat_scratch"])]
        else:
            work = (  # a generator: the step holds nothing that grows with the model
                (
                    p.data,
                    p.grad,
                    group["state"][name]["exp_avg"],
                    group["state"][name]["exp_avg_sq"],
                    s1,
                    s2,
                )
                for (name, p), s1, s2 in zip(group["params"], *group["scratch"])
            )
        for p, g, m, v, a, b in work:
            if impl == "naive":  # the same arithmetic, each operation a new array
                if self.decoupled:
                    p[...] = p * (1.0 - lr * wd)
                elif wd:
                    g = g + wd * p
                m[...] = (
                    m + weight * (g - m) if weight < 0.5 else g - (g - m) * (1.0 - weight)
                )
                v[...] = v * beta2 + ((1.0 - beta2) * g) * g
                p[...] = p + (-step_size * m) / (np.sqrt(v) / bc2_sqrt + eps)
                continue
            if self.decoupled:
                np.multiply(p, 1.0 - lr * wd, out=p)
                grad = g
            elif wd:
                np.multiply(p, wd, out=a)
                grad = np.add(g, a, out=a)
            else:
                grad = g
            np.subtract(grad, m, out=b)  # the lerp: m + w (g - m), or g - (g - m)(1 - w)
            if weight < 0.5:
                np.multiply(b, weight, out=b)
                np.add(m, b, out=m)
            else:
                np.multiply(b, 1.0 - weight, out=b)
                np.subtract(grad, b, out=m)
            np.multiply(grad, 1.0 - beta2, out=b)
            np.multiply(b, grad, out=b)
            np.multiply(v, beta2, out=v)
            np.add(v, b, out=v)
            np.sqrt(v, out=a)  # the denominator
            np.divide(a, bc2_sqrt, out=a)
            np.add(a, eps, out=a)
            np.multiply(m, -step_size, out=b)
            np.divide(b, a, out=b)
            np.add(p, b, out=p)


class AdamW(Adam):
    """Adam with decoupled weight decay (the weights shrink by lr * weight_decay each step, apart
    from the gradient's scaling), as torch.optim.AdamW (default weight_decay 1e-2)."""

    defaults = {**Adam.defaults, "weight_decay": 1e-2}
    decoupled = True


# --------------------------------------------------------------------------------------------
# gradient clipping and schedules


def clip_grad_norm(params: Any, max_norm: float, eps: float = 1e-6) -> float:
    """Scale every gradient in place so that their total (L2) norm is at most max_norm.

    torch.nn.utils.clip_grad_norm_'s rule: total = norm of the per-parameter norms; each grad
    is multiplied by min(1, max_norm / (total + eps)). Returns the total norm before clipping
    (inf or nan if a gradient is not finite; then the gradients are left as they are).
    """
    _check_number("max_norm", max_norm, 0.0, low_open=True)
    grads = [p.grad for _, p in named_parameters(params)]
    norms = [math.sqrt(float(np.dot(g.reshape(-1), g.reshape(-1)))) for g in grads]
    total = math.sqrt(sum(n * n for n in norms))
    coefficient = max_norm / (total + eps)
    if (
        math.isfinite(total) and coefficient < 1.0
    ):  # torch multiplies by 1.0 too: same numbers
        for g in grads:
            np.multiply(g, coefficient, out=g)
    return total


def constant_lr(lr: float) -> Callable[[int], float]:
    """The same learning rate at every step."""
    _check_number("lr", lr, 0.0)
    return lambda step: lr


def linear_decay_lr(lr: float, steps: int) -> Callable[[int], float]:
    """microgpt's schedule: lr * (1 - step / steps), step counted from 0."""
    _check_number("lr", lr, 0.0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return lambda step: lr * (1 - step / steps)


def warmup_cosine_lr(
    lr: float, warmup: int, decay_steps: int, min_lr: float = 0.0
) -> Callable[[int], float]:
    """nanoGPT's get_lr: linear warm-up over `warmup` steps, then a cosine from lr down to
    min_lr at step decay_steps, and min_lr after it."""
    _check_number("lr", lr, 0.0)
    _check_number("min_lr", min_lr, 0.0, lr, high_open=False)
    if not (
        isinstance(warmup, int)
        and isinstance(decay_steps, int)
        and 0 <= warmup < decay_steps
    ):
        raise ValueError(
            f"need integers 0 <= warmup < decay_steps, got {warmup}, {decay_steps}"
        )

    def schedule(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / (warmup + 1)
        if step > decay_steps:
            return min_lr
        ratio = (step - warmup) / (decay_steps - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    return schedule


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Set the learning rate of every group (what a schedule does before each step)."""
    _check_number("lr", lr, 0.0)
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------
# chapter 02's optimizer on scalar Values


class ValueAdam:
    """microgpt's Adam on scalar Values: its exact update, p -= lr * m_hat / (sqrt(v_hat) + eps),
    with the gradients it used reset to 0 afterwards. (Its order of operations is microgpt's,
    not torch's: the two agree to rounding, not bit for bit.)"""

    def __init__(
        self,
        params: Sequence[Any],
        betas: tuple[float, float] = (0.85, 0.99),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.beta1, self.beta2 = (_check_number("beta", b, 0.0, 1.0) for b in betas)
        self.eps = _check_number("eps", eps, 0.0, low_open=True)
        self.m = [0.0] * len(self.params)  # running mean of the gradient
        self.v = [0.0] * len(self.params)  # running mean of its square
        self.t = 0

    def step(self, lr: float) -> None:
        self.t += 1
        b1, b2, eps, m, v = self.beta1, self.beta2, self.eps, self.m, self.v
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t  # bias correction: m and v start at 0
        for i, p in enumerate(self.params):
            g = p.grad
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p.data -= lr * (m[i] / c1) / ((v[i] / c2) ** 0.5 + eps)
            p.grad = 0.0


def parameters_of(arrays: Iterable[np.ndarray]) -> list[Parameter]:
    """Wrap arrays in Parameters (a copy each)."""
    return [Parameter(a) for a in arrays]
