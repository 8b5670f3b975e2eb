"""The random-program vocabulary every autograd in the course is tested with.

A program is a list of steps (op, i, j, c) over registers that start as the inputs: each step
appends apply(op, registers[i], registers[j], c). The same program replays on scalar Values, on
torch tensors (the reference) and, from chapter 09, on the course's array Tensor.
"""

from __future__ import annotations

import weakref

from hypothesis import strategies as st

from microgpt_lib.autograd import Value

BINARY = ["add", "sub", "mul", "div"]
WITH_CONSTANT = [
    "add_c",
    "c_add",
    "c_sub",
    "sub_c",
    "mul_c",
    "c_mul",
    "div_c",
    "c_div",
    "pow",
]
UNARY = ["neg", "exp", "log", "tanh", "relu"]
EXPONENTS = [2, 3, -1, -2, 0.5, 1.5, -0.5, 0]


def apply(op: str, a, b, c: float):
    """One step of a program; a and b are Values or torch tensors, c a plain number."""
    return {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "div": lambda: a / b,
        "add_c": lambda: a + c,
        "c_add": lambda: c + a,
        "c_sub": lambda: c - a,
        "sub_c": lambda: a - c,
        "mul_c": lambda: a * c,
        "c_mul": lambda: c * a,
        "div_c": lambda: a / c,
        "c_div": lambda: c / a,
        "pow": lambda: a**c,
        "neg": lambda: -a,
        "exp": lambda: a.exp(),
        "log": lambda: a.log(),
        "tanh": lambda: a.tanh(),
        "relu": lambda: a.relu(),
    }[op]()


def allowed(op: str, a: float, b: float, c: float) -> bool:
    """Keep every step well inside its domain and away from kinks, so finite differences are
    accurate: log of >= 0.2, division by |x| >= 0.2, fractional powers of >= 0.2, relu away
    from 0."""
    if op == "div":
        return abs(b) >= 0.2
    if op == "c_div":
        return abs(a) >= 0.2
    if op == "div_c":
        return abs(c) >= 0.2
    if op == "log":
        return a >= 0.2
    if op == "pow":
        return a >= 0.2 or (float(c).is_integer() and (c >= 0 or abs(a) >= 0.2))
    if op == "exp":
        return a <= 4
    if op == "relu":
        return abs(a) >= 0.05
    return True


def run(program, inputs):
    """Replay a program: each step appends apply(op, registers[i], registers[j], c); the output is
    the sum of every register, so every step matters."""
    registers = list(inputs)
    for op, i, j, c in program:
        registers.append(apply(op, registers[i], registers[j], c))
    return sum(registers[1:], registers[0])


@st.composite
def programs(draw):
    """(xs, program): a few inputs in [-2, 2] and up to 14 steps over all the operations, each
    step checked against its domain on the actual values (replaced by tanh when out of it)."""
    xs = draw(st.lists(st.floats(-2, 2), min_size=1, max_size=4))
    registers = [Value(x) for x in xs]
    program = []
    for _ in range(draw(st.integers(1, 14))):
        op = draw(st.sampled_from(BINARY + WITH_CONSTANT + UNARY))
        i, j = (
            draw(st.integers(0, len(registers) - 1)),
            draw(st.integers(0, len(registers) - 1)),
        )
        c = (
            draw(st.sampled_from(EXPONENTS))
            if op == "pow"
            else draw(st.floats(-3, 3).filter(lambda v: abs(v) > 0.1))
        )
        a, b = registers[i].data, registers[j].data
        if not allowed(op, a, b, c):
            op = "tanh"
        out = apply(op, registers[i], registers[j], c)
        if (
            abs(out.data) > 50
        ):  # keep magnitudes modest: finite differences lose digits on big values
            op, out = "tanh", registers[i].tanh()
        program.append((op, i, j, c))
        registers.append(out)
    return xs, program


def close(a: float, b: float, rtol: float, atol: float) -> bool:
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


# --------------------------------------------------------------------------------------------
# graphs that should free themselves


class weakly_held_value(Value):  # noqa: N801  (used like a function: a Value factory)
    """A Value one can hold a weak reference to (Value itself has no __weakref__ slot)."""

    __slots__ = ("__weakref__",)


def graph_frees_itself(number) -> bool:
    """Build, backpropagate and drop a graph with the cyclic collector off: are its leaves gone?"""
    leaves = [number(0.3), number(-1.2)]
    probes = [weakref.ref(leaf) for leaf in leaves]
    a, b = leaves
    loss = ((a * b + 1).tanh() - a / 3 + (b * b).exp().log()).relu() * 2
    loss.backward()
    del a, b, leaves, loss
    return all(p() is None for p in probes)


# --------------------------------------------------------------------------------------------
# chapter 09: the same programs on arrays


# shapes that all broadcast together, to (2, 3)
BROADCAST_SHAPES = [(), (3,), (2, 1), (1, 3), (2, 3)]


@st.composite
def tensor_inputs(draw, xs):
    """One float64 array per input x, each of a shape drawn from BROADCAST_SHAPES and filled
    with x: the program's domain checks (made on x) hold for every element, and the registers
    broadcast, so the gradients must be summed back to each input's shape."""
    import numpy as np

    return [np.full(draw(st.sampled_from(BROADCAST_SHAPES)), float(x)) for x in xs]
