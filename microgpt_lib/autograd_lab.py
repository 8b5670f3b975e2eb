"""Experiments around autograd.Value: the variants it is measured against, a toy problem, a drawing.

ClosureValue             micrograd's Value, nearly verbatim: a __dict__, a set of children and a
                         closure per node, recursive topological sort (the design Value improves on)
DictValue                Value's own methods on a class without __slots__ (only the storage differs)
VALUE_VARIANTS                 name -> (number type, topological sort, backward pass) for the above
make_moons(n)            two interleaved half-circles, labels -1/+1: the 2-D toy dataset
MLP(n_in, sizes)         micrograd's multi-layer perceptron, on Values, a variant or plain floats
hinge_loss(model, ...)   the SVM-style loss micrograd's demo trains with, plus accuracy
draw_graph(root)         a computation graph drawn with matplotlib: data and grad on every node
train_step(model, ...)   one step of gradient descent: forward, zero_grad, backward, update
OPS, random_program(seed), run_program(program, inputs)   random expressions, run on Values
                         or torch tensors alike (to check Value against torch.autograd)
profile_step(...)        forward / topological sort / backward / free, timed phase by phase
graph_bytes(...)         bytes a graph holds per node (tracemalloc), and what dropping it frees
suite_autograd(options)  the `python -m microgpt_lib.bench autograd` suite
check_sigmoid, check_backward_twice, check_dot   the exercises' checkers (reference_sigmoid and
                         reference_dot are their solutions)
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import sys
import time
import tracemalloc
import types
from typing import Any, Callable, Sequence

from microgpt_lib import autograd, bench
from microgpt_lib.autograd import Value, backpropagate, topological_order

# --------------------------------------------------------------------------------------------
# the variants


class ClosureValue:
    """micrograd's Value (engine.py), kept as it is to be measured against.

    Each result stores a closure, _backward, that pushes its gradient into its inputs. The closure
    refers to the node that owns it (out), so every node sits in a reference cycle: a dropped graph
    is freed only when Python's cyclic garbage collector runs. Plain numbers become leaf nodes.
    """

    def __init__(self, data, _children=(), _op=""):
        self.data = data
        self.grad = 0
        self._backward = lambda: None
        self._prev = set(_children)
        self._op = _op

    def __add__(self, other):
        other = other if isinstance(other, ClosureValue) else ClosureValue(other)
        out = ClosureValue(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, ClosureValue) else ClosureValue(other)
        out = ClosureValue(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, other):
        assert isinstance(other, (int, float)), "only supporting int/float powers for now"
        out = ClosureValue(self.data**other, (self,), f"**{other}")

        def _backward():
            self.grad += (other * self.data ** (other - 1)) * out.grad

        out._backward = _backward
        return out

    def _unary(self, data, local_grad, op):
        """exp, log, tanh and relu: one input, a local gradient known in the forward pass."""
        out = ClosureValue(data, (self,), op)

        def _backward():
            self.grad += local_grad * out.grad

        out._backward = _backward
        return out

    def exp(self):
        e = math.exp(self.data)
        return self._unary(e, e, "exp")

    def log(self):
        return self._unary(math.log(self.data), 1 / self.data, "log")

    def tanh(self):
        t = math.tanh(self.data)
        return self._unary(t, 1 - t * t, "tanh")

    def relu(self):
        return self._unary(max(self.data, 0), float(self.data > 0), "ReLU")

    def backward(self):
        run_closures(recursive_topological_order(self))

    def __neg__(self):  # -self
        return self * -1

    def __radd__(self, other):  # other + self
        return self + other

    def __sub__(self, other):  # self - other
        return self + (-other)

    def __rsub__(self, other):  # other - self
        return other + (-self)

    def __rmul__(self, other):  # other * self
        return self * other

    def __truediv__(self, other):  # self / other
        return self * other**-1

    def __rtruediv__(self, other):  # other / self
        return other * self**-1

    def __repr__(self):
        return f"ClosureValue(data={self.data}, grad={self.grad})"


def recursive_topological_order(root: ClosureValue) -> list[ClosureValue]:
    """micrograd's build_topo: one Python frame per level of the graph (1000 levels at most)."""
    topo, visited = [], set()

    def build_topo(v):
        if v not in visited:
            visited.add(v)
            for child in v._prev:
                build_topo(child)
            topo.append(v)

    build_topo(root)
    return topo


def run_closures(order: list[ClosureValue]) -> None:
    """micrograd's backward pass: seed the output, then call every node's closure, output first."""
    order[-1].grad = 1
    for v in reversed(order):
        v._backward()


def _without_slots(cls: type) -> type:
    """A class with cls's very methods (the same compiled code) whose instances keep a __dict__.

    The methods are re-bound to a copy of autograd's globals in which the name Value means the new
    class, so `Value(...)` inside them makes instances of it: only the storage of a node changes.
    """
    namespace = {
        name: attr
        for name, attr in vars(cls).items()
        if name != "__slots__" and not isinstance(attr, types.MemberDescriptorType)
    }
    new = type("DictValue", (), namespace)
    module_globals = {**vars(autograd), cls.__name__: new}
    for name, attr in namespace.items():
        if isinstance(attr, types.FunctionType):
            setattr(
                new,
                name,
                types.FunctionType(
                    attr.__code__,
                    module_globals,
                    attr.__name__,
                    attr.__defaults__,
                    attr.__closure__,
                ),
            )
    return new


DictValue = _without_slots(Value)

# name -> (number type, topological sort, backward pass over that order)
VALUE_VARIANTS: dict[str, tuple[type, Callable[[Any], list], Callable[[list], None]]] = {
    "value": (Value, topological_order, backpropagate),
    "value-no-slots": (DictValue, topological_order, backpropagate),
    "closure": (ClosureValue, recursive_topological_order, run_closures),
}

# --------------------------------------------------------------------------------------------
# the toy problem: micrograd's demo


def make_moons(
    n: int = 100, noise: float = 0.1, seed: int = 0
) -> tuple[list[tuple[float, float]], list[int]]:
    """n points on two interleaved half-circles (+ Gaussian noise); labels -1 (top), +1 (bottom)."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (one point per class), got {n}")
    rng = random.Random(seed)
    points, labels = [], []
    for i in range(n):
        upper = i < n // 2
        angle = math.pi * rng.random()
        x, y = (
            (math.cos(angle), math.sin(angle))
            if upper
            else (1 - math.cos(angle), 0.5 - math.sin(angle))
        )
        points.append((x + rng.gauss(0, noise), y + rng.gauss(0, noise)))
        labels.append(-1 if upper else 1)
    return points, labels


def relu(x):
    """x.relu() for a Value or a variant; max(x, 0) for a plain float (the baseline)."""
    return (x if x > 0.0 else 0.0) if isinstance(x, float) else x.relu()


class MLP:
    """micrograd's multi-layer perceptron: ReLU hidden layers, a linear output layer.

    Weights start uniform in [-1, 1), biases at 0, drawn from random.Random(seed). `number` makes
    the parameters: Value, DictValue, ClosureValue, or float for a forward pass without autograd.
    """

    def __init__(
        self,
        n_in: int,
        sizes: Sequence[int],
        *,
        number: Callable[[float], Any] = Value,
        seed: int = 0,
    ):
        rng = random.Random(seed)
        fans = [n_in, *sizes]
        # a layer is a list of neurons; a neuron is (weights, bias)
        self.layers = [
            [
                ([number(rng.uniform(-1, 1)) for _ in range(fan_in)], number(0.0))
                for _ in range(fan_out)
            ]
            for fan_in, fan_out in zip(fans, fans[1:])
        ]

    def __call__(self, x: Sequence[Any]) -> Any:
        for i, layer in enumerate(self.layers):
            x = [sum((w * xi for w, xi in zip(ws, x)), b) for ws, b in layer]
            if i < len(self.layers) - 1:
                x = [relu(v) for v in x]
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Any]:
        return [p for layer in self.layers for ws, b in layer for p in (*ws, b)]

    def with_floats(self) -> MLP:
        """A copy whose parameters are the plain floats in .data: fast to evaluate, no graph."""
        copy = MLP.__new__(MLP)
        copy.layers = [
            [([w.data for w in ws], b.data) for ws, b in layer] for layer in self.layers
        ]
        return copy


def hinge_loss(
    model: MLP,
    points: Sequence[Sequence[float]],
    labels: Sequence[int],
    alpha: float = 1e-4,
) -> tuple[Any, float]:
    """mean(relu(1 - y * score)) + alpha * sum(p^2), and the fraction of points classified right."""
    if len(points) != len(labels) or not points:
        raise ValueError(
            "need as many labels as points (and at least one): "
            f"{len(points)} points, {len(labels)} labels"
        )
    scores = [model(p) for p in points]
    data_loss = sum(relu(1 - y * s) for y, s in zip(labels, scores)) * (1.0 / len(points))
    reg_loss = alpha * sum(p * p for p in model.parameters())
    accuracy = sum(
        (y > 0) == (getattr(s, "data", s) > 0) for y, s in zip(labels, scores)
    ) / len(points)
    return data_loss + reg_loss, accuracy


# --------------------------------------------------------------------------------------------
# drawing a graph


def draw_graph(root: Value, names: dict[Value, str] | None = None, ax: Any = None) -> Any:
    """Draw root's computation graph left to right: a box per node (name, data, grad), an arrow per
    input labelled with its local gradient d(node)/d(input). Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    names = names or {}
    order = topological_order(root)
    steps: dict[Value, int] = {
        root: 0
    }  # the longest path from a node to the root, in edges
    parents: dict[Value, list[Value]] = {node: [] for node in order}
    for node in reversed(order):  # parents first, so a node's own distance is final
        for child in node._children:
            steps[child] = max(steps.get(child, 0), steps[node] + 1)
            parents[child].append(node)
    width = max(steps.values())
    columns: dict[int, list[Value]] = {}
    for node in order:
        columns.setdefault(width - steps[node], []).append(node)
    position: dict[Value, tuple[float, float]] = {}
    for column in range(
        width, -1, -1
    ):  # right to left: sit each node level with its parents
        col = columns.get(column, [])
        col.sort(
            key=lambda v: (
                -statistics.fmean(position[p][1] for p in parents[v])
                if parents[v]
                else 0.0
            )
        )
        for i, node in enumerate(col):
            position[node] = (column, (len(col) - 1) / 2 - i)
    if ax is None:
        height = max(len(col) for col in columns.values())
        ax = plt.subplots(figsize=(2.1 * len(columns) + 1, 1.1 * height + 1))[1]
    boxes = {}
    for node in order:
        label = f"{names[node]}\n" if node in names else ""
        boxes[node] = ax.text(
            *position[node],
            f"{label}data {node.data:.4g}\ngrad {node.grad:.4g}",
            ha="center",
            va="center",
            fontsize=9,
            family="monospace",
            bbox=dict(
                boxstyle="round,pad=0.4",
                fc="#e8f0fe" if node._children else "#fff4d6",
                ec="#4a6fa5",
            ),
        )
    for node in order:
        for child, local in zip(node._children, node._local_grads):
            ax.annotate(
                "",
                xy=(0, 0.5),
                xycoords=boxes[node],
                xytext=(1, 0.5),
                textcoords=boxes[child],
                arrowprops=dict(arrowstyle="->", color="#555555"),
            )
            (x0, y0), (x1, y1) = position[child], position[node]
            ax.text(
                0.45 * x0 + 0.55 * x1,
                0.45 * y0 + 0.55 * y1 + 0.1,
                f"×{local:.3g}",
                ha="center",
                fontsize=8,
                color="#a33",
            )
    ax.set_xlim(-0.6, len(columns) - 0.4)
    spread = max(len(col) for col in columns.values())
    ax.set_ylim(-spread / 2 - 0.1, spread / 2 + 0.1)
    ax.set_axis_off()
    return ax


# --------------------------------------------------------------------------------------------
# measurements


def workload(variant: str, n_points: int, seed: int = 0) -> tuple[Callable[[], Any], MLP]:
    """A forward pass that builds the hinge loss of micrograd's 2-16-16-1 MLP on n_points moons.

    variant is a key of VALUE_VARIANTS, or "float": the same arithmetic on plain floats, no graph.
    """
    number = float if variant == "float" else VALUE_VARIANTS[variant][0]
    model = MLP(2, [16, 16, 1], number=number, seed=seed)
    points, labels = make_moons(n_points, seed=seed)
    return (lambda: hinge_loss(model, points, labels)[0]), model


def count_nodes(n_points: int) -> int:
    """Nodes in the workload's Value graph: one per arithmetic operation or function."""
    return len(topological_order(workload("value", n_points)[0]()))


def points_for(n_nodes: int) -> int:
    """How many moons points make a workload graph of about n_nodes Value nodes."""
    ten, twenty = (
        count_nodes(10),
        count_nodes(20),
    )  # the graph grows linearly with the points
    per_point = (twenty - ten) / 10
    return max(2, round(10 + (n_nodes - ten) / per_point))


STEP_PHASES = ("forward", "topo", "backward", "free")


def profile_step(
    variant: str, n_points: int, *, repeats: int = 5, collector: bool = True
) -> dict[str, Any]:
    """Time one training step phase by phase: forward (build the graph), topo (topological
    sort), backward (the chain rule over it), free (drop the graph and get its memory back).

    One step is a pipeline, so each phase is timed inside it (rather than by bench.measure,
    which times a call on its own); the median over repeats (after one warm-up) is reported.
    collector=False pauses the cyclic collector for the whole run. Cyclic graphs (ClosureValue)
    are not freed by dropping them: their free phase includes the gc.collect() that frees them.
    Returns {"forward": Timing, ..., "free": Timing, "step": Timing (all four phases), and medians
    per step of "gc_runs" (the collector's runs), "gc_full_runs" (of the oldest generation, which
    scan every tracked object alive) and "gc_seconds" (spent inside the collector)}.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    forward, _ = workload(variant, n_points)
    sort, propagate = VALUE_VARIANTS[variant][1:] if variant != "float" else (None, None)
    cyclic = variant == "closure"
    keys = (*STEP_PHASES, "step", "gc_runs", "gc_full_runs", "gc_seconds")
    samples: dict[str, list[float]] = {key: [] for key in keys}
    gc.collect()
    with bench.paused_gc(not collector):
        for repeat in range(repeats + 1):
            with bench.GCMeter() as meter:
                t0 = time.perf_counter()
                root = forward()
                t1 = time.perf_counter()
                order = sort(root) if sort else None
                t2 = time.perf_counter()
                if propagate:
                    propagate(order)
                t3 = time.perf_counter()
                del root, order
                if cyclic:
                    gc.collect()
                t4 = time.perf_counter()
            if repeat:  # the first step is the warm-up
                for key, value in zip(
                    keys,
                    (
                        t1 - t0,
                        t2 - t1,
                        t3 - t2,
                        t4 - t3,
                        t4 - t0,
                        meter.total,
                        meter.collections[2],
                        meter.seconds,
                    ),
                ):
                    samples[key].append(value)
    result: dict[str, Any] = {
        key: bench.Timing.from_times(samples[key]) for key in (*STEP_PHASES, "step")
    }
    for key in ("gc_runs", "gc_full_runs", "gc_seconds"):
        result[key] = statistics.median(samples[key])
    return result


def graph_bytes(variant: str, n_points: int) -> dict[str, int]:
    """Bytes allocated by one forward + backward and still held while the graph is alive, and what
    is still held right after the output is dropped, before any garbage collection.

    Measured with tracemalloc (every block Python's allocators hand out: nodes, tuples, floats,
    dicts, sets, closures), with the collector paused so that nothing is freed behind our back.
    The model's parameters and the data exist before the measurement starts and are not counted.
    """
    forward, _ = workload(variant, n_points)
    _, sort, propagate = VALUE_VARIANTS[variant]
    gc.collect()
    with bench.paused_gc():  # nothing may be freed behind our back
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            root = forward()
            order = sort(root)
            propagate(order)
            nodes = len(order)
            del order
            alive = tracemalloc.get_traced_memory()[0] - before
            node_bytes = sys.getsizeof(root)  # the node object alone (with its GC header)
            del root
            dropped = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    gc.collect()  # frees what a cyclic variant left behind
    return {
        "nodes": nodes,
        "graph_bytes": alive,
        "bytes_left_after_drop": dropped,
        "node_object_bytes": node_bytes,
    }


def suite_autograd(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """Forward, topological sort, backward and free in ns per node, and bytes per node, for a graph
    of about 100k nodes (--sizes: node counts; --quick: 20k), on plain floats, Value and its
    variants, with the cyclic garbage collector running and paused.

    "Per node" always divides by the nodes of the Value graph (one per operation), so the rows
    compare the same work; graph_nodes is a variant's own count (micrograd also makes a leaf node
    for every plain number). The float row does the same arithmetic without building a graph.
    """
    rows = []
    for size in options.sizes or ([20_000] if options.quick else [100_000]):
        n_points = points_for(size)
        nodes = count_nodes(n_points)
        repeats = options.rounds
        for variant in ("float", *VALUE_VARIANTS):
            memory = {}
            if variant != "float":
                measured = graph_bytes(variant, n_points)
                memory = {
                    "graph_nodes": measured["nodes"],
                    "bytes_per_node": measured["graph_bytes"] / nodes,
                    "graph_mb": measured["graph_bytes"] / 1e6,
                    "left_after_drop_mb": measured["bytes_left_after_drop"] / 1e6,
                    "node_object_bytes": measured["node_object_bytes"],
                    "bytes_method": "tracemalloc",
                }
            for collector in (True, False) if variant != "float" else (True,):
                t = profile_step(variant, n_points, repeats=repeats, collector=collector)
                row: dict[str, Any] = {
                    "kernel": variant,
                    "family": "python" if variant == "float" else "autograd",
                    "gc": bench.gc_label(paused=not collector),
                    "nodes": nodes,
                    "points": n_points,
                }
                for phase in (*STEP_PHASES, "step"):
                    row[f"{phase}_ns_per_node"] = t[phase].median_s / nodes * 1e9
                row["gc_runs_per_step"] = t["gc_runs"]
                row["gc_full_runs_per_step"] = t["gc_full_runs"]
                row["gc_ms_per_step"] = t["gc_seconds"] * 1e3
                row.update(memory)
                row.update(t["step"].as_row())  # median_s, min_s, max_s: the whole step
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# training: one step, the same for every experiment of the chapter


def train_step(
    model: MLP,
    points: Sequence[Sequence[float]],
    labels: Sequence[int],
    learning_rate: float,
    *,
    pause_gc: bool = True,
) -> tuple[float, float]:
    """One step of gradient descent on hinge_loss; returns (loss, accuracy) as plain numbers.

    Build the loss (the forward pass builds the graph), zero the parameters' gradients (they
    accumulate), backpropagate, step every parameter against its gradient, drop the graph.
    pause_gc keeps Python's cyclic garbage collector out of the step (bench.paused_gc).
    """
    params = model.parameters()
    with bench.paused_gc(pause_gc):
        loss, accuracy = hinge_loss(model, points, labels)
        autograd.zero_grad(params)
        loss.backward()
        for p in params:
            p.data -= learning_rate * p.grad
        value = loss.data
        del loss  # the graph goes now, while the collector is still paused
    return value, accuracy


# --------------------------------------------------------------------------------------------
# random expressions: a program is a list of steps (op, i, j, c) over registers that start as
# the inputs; each step appends OPS[op](registers[i], registers[j], c). The same program runs
# on Values and on torch tensors (the names are those of tests/strategies.py).

OPS: dict[str, Callable[[Any, Any, float], Any]] = {
    "add": lambda a, b, c: a + b,
    "sub": lambda a, b, c: a - b,
    "mul": lambda a, b, c: a * b,
    "div": lambda a, b, c: a / b,
    "add_c": lambda a, b, c: a + c,
    "c_sub": lambda a, b, c: c - a,
    "mul_c": lambda a, b, c: a * c,
    "c_div": lambda a, b, c: c / a,
    "pow": lambda a, b, c: a**c,
    "neg": lambda a, b, c: -a,
    "exp": lambda a, b, c: a.exp(),
    "log": lambda a, b, c: a.log(),
    "tanh": lambda a, b, c: a.tanh(),
    "relu": lambda a, b, c: a.relu(),
}
EXPONENTS = (2, 3, -1, 0.5, 1.5)


def _in_domain(op: str, a: float, b: float, c: float) -> bool:
    """Keep a step well inside its domain and away from kinks and huge values."""
    if op == "div":
        return abs(b) >= 0.2
    if op in ("c_div", "log"):
        return (abs(a) if op == "c_div" else a) >= 0.2
    if op == "pow":
        return a >= 0.2 or (float(c).is_integer() and (c > 0 or abs(a) >= 0.2))
    if op == "exp":
        return a <= 3.0
    if op == "relu":
        return abs(a) >= 0.05
    return True


def random_program(
    seed: int, n_inputs: int = 3, steps: int = 12
) -> tuple[list[float], list[tuple[str, int, int, float]]]:
    """(inputs, program): n_inputs numbers in [-2, 2] and `steps` random steps over every op,
    each checked against its domain on the actual values (tanh where it falls outside)."""
    rng = random.Random(seed)
    xs = [rng.uniform(-2.0, 2.0) for _ in range(n_inputs)]
    registers = [Value(x) for x in xs]
    program = []
    for _ in range(steps):
        op = rng.choice(list(OPS))
        i, j = rng.randrange(len(registers)), rng.randrange(len(registers))
        c = (
            rng.choice(EXPONENTS)
            if op == "pow"
            else rng.choice([-1, 1]) * rng.uniform(0.3, 2.5)
        )
        if not _in_domain(op, registers[i].data, registers[j].data, c):
            op = "tanh"
        out = OPS[op](registers[i], registers[j], c)
        if abs(out.data) > 50:  # finite differences and float64 both like modest values
            op, out = "tanh", registers[i].tanh()
        program.append((op, i, j, c))
        registers.append(out)
    return xs, program


def run_program(
    program: Sequence[tuple[str, int, int, float]], inputs: Sequence[Any]
) -> Any:
    """Replay a program on Values or torch tensors; the output is the sum of every register."""
    registers = list(inputs)
    for op, i, j, c in program:
        registers.append(OPS[op](registers[i], registers[j], c))
    return sum(registers[1:], registers[0])


def format_program(program: Sequence[tuple[str, int, int, float]], n_inputs: int) -> str:
    """One line per step, as a person would write it: 'r3 = r0 * r1', 'r4 = tanh(r3)'."""
    forms = {
        "add": "{a} + {b}",
        "sub": "{a} - {b}",
        "mul": "{a} * {b}",
        "div": "{a} / {b}",
        "add_c": "{a} + {c}",
        "c_sub": "{c} - {a}",
        "mul_c": "{a} * {c}",
        "c_div": "{c} / {a}",
        "pow": "{a} ** {c}",
        "neg": "-{a}",
    }
    lines = []
    for step, (op, i, j, c) in enumerate(program):
        form = forms.get(op, op + "({a})")
        text = form.format(a=f"r{i}", b=f"r{j}", c=f"{c:.3g}")
        text = text.replace("+ -", "- ").replace("- -", "+ ")
        lines.append(f"r{n_inputs + step} = {text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# exercises: a checker for each (it returns a message on success, raises AssertionError)


def reference_sigmoid(x: Value) -> Value:
    """sigmoid(x) = 1 / (1 + e^-x) as one node: its local gradient is s * (1 - s)."""
    if x.data >= 0:
        s = 1.0 / (1.0 + math.exp(-x.data))
    else:  # e^-x would overflow for x < -709; e^x cannot
        e = math.exp(x.data)
        s = e / (1.0 + e)
    return Value(s, (x,), (s * (1.0 - s),))


def check_sigmoid(sigmoid_fn: Callable[[Value], Value]) -> str:
    """Check my_sigmoid(x): one fused Value node, the right value, the right local gradient."""
    for x in (-3.0, -0.5, 0.0, 0.7, 4.0, 30.0, -1000.0):
        v = Value(x)
        try:
            out = sigmoid_fn(v)
        except OverflowError as error:
            raise AssertionError(
                f"my_sigmoid(Value({x})) raised OverflowError ({error}): math.exp(-x) "
                "overflows for x below about -709; for negative x use e^x / (1 + e^x)"
            ) from None
        assert isinstance(out, Value), f"return a Value, got {type(out).__name__}"
        expected = 0.5 * (
            1.0 + math.tanh(x / 2)
        )  # the same function, written another way
        assert abs(out.data - expected) <= 1e-12, (
            f"sigmoid({x}) is {expected!r}, got {out.data!r}"
        )
        nodes = len(topological_order(out))
        assert out._children == (v,) and len(out._local_grads) == 1, (
            f"sigmoid should be one node whose only child is x; yours has children "
            f"{out._children!r:.80} and its graph has {nodes} nodes: compute s and its "
            "local gradient directly, in one Value(...)"
        )
        slope = expected * (1.0 - expected)
        assert abs(out._local_grads[0] - slope) <= 1e-12, (
            f"at x = {x} the local gradient d sigmoid/dx is s (1 - s) = {slope!r}; "
            f"your node stores {out._local_grads[0]!r}"
        )
    ((backprop, numeric),) = autograd.check_gradients(lambda vs: sigmoid_fn(vs[0]), [0.3])
    return (
        "my_sigmoid is right: one node, s = 1 / (1 + e^-x), local gradient s (1 - s) "
        f"(at 0.3: backward() {backprop:.6f}, finite differences {numeric:.6f})"
    )


def _neuron(number: Callable[[float], Any] = Value) -> tuple[Any, dict[str, Any]]:
    """The chapter's neuron, o = tanh(x1 w1 + x2 w2 + b), with x2 = 0.5 so that every leaf
    has a gradient; returns o and {name: node} for its leaves and its inner node n."""
    x1, w1, x2, w2, b = (number(v) for v in (2.0, -3.0, 0.5, 1.0, 6.8813735870195432))
    n = x1 * w1 + x2 * w2 + b
    return n.tanh(), {"x1": x1, "w1": w1, "x2": x2, "w2": w2, "b": b, "n": n}


ENGINES = {"value": Value, "micrograd": ClosureValue}


def backward_twice_factors(calls: int = 2, engine: str = "value") -> tuple[float, float]:
    """(w1's, n's) gradient after `calls` backward() calls without zero_grad, over after one.

    engine "value" is autograd.Value, "micrograd" its closure-based original (ClosureValue).
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    o, nodes = _neuron(ENGINES[engine])
    o.backward()
    once = nodes["w1"].grad, nodes["n"].grad
    for _ in range(calls - 1):
        o.backward()
    return nodes["w1"].grad / once[0], nodes["n"].grad / once[1]


def check_backward_twice(
    leaf_factor: float, inner_factor: float, calls: int = 2, engine: str = "value"
) -> str:
    """Check a prediction: after `calls` backward() calls on the neuron without zero_grad, by
    what factor has a leaf's gradient (w1) grown over one call, and an inner node's (n)?

    engine "value" (the chapter's) or "micrograd" (which resets no node between calls)."""
    leaf, inner = backward_twice_factors(calls, engine)
    why_leaf, why_inner = {
        "value": (
            "a leaf's gradient accumulates (+=) across calls until zero_grad",
            "backpropagate resets every inner node before each pass (it would otherwise "
            "push a stale gradient on), so an inner node holds the latest pass",
        ),
        "micrograd": (
            "micrograd resets no node: each inner node adds the new pass to its old "
            "gradient and pushes the sum on, so the excess compounds level by level",
            "micrograd resets only the output, so n adds each pass to what it had",
        ),
    }[engine]
    assert abs(leaf_factor - leaf) < 1e-9, (
        f"with {engine}, after {calls} backward() calls w1.grad is {leaf:g}x its value "
        f"after one, not {leaf_factor:g}x: {why_leaf}"
    )
    assert abs(inner_factor - inner) < 1e-9, (
        f"with {engine}, after {calls} backward() calls n.grad is {inner:g}x its value "
        f"after one, not {inner_factor:g}x: {why_inner}"
    )
    return (
        f"right: with {engine}, after {calls} calls w1.grad is {leaf:g}x and n.grad "
        f"{inner:g}x what one call gives; zero_grad before each backward() keeps a step honest"
    )


def reference_dot(ws: Sequence[Value], xs: Sequence[Value]) -> Value:
    """sum(w * x) as one node: its children are ws and xs, d/dw_i = x_i and d/dx_i = w_i."""
    if len(ws) != len(xs):
        raise ValueError(f"dot needs as many weights as inputs: {len(ws)} and {len(xs)}")
    data = sum(w.data * x.data for w, x in zip(ws, xs))
    return Value(data, (*ws, *xs), (*(x.data for x in xs), *(w.data for w in ws)))


def check_dot(dot_fn: Callable[[Sequence[Value], Sequence[Value]], Value]) -> str:
    """Check my_dot(ws, xs): one fused Value node for sum(w * x) with the right gradients."""
    rng = random.Random(0)
    ws = [Value(rng.uniform(-1, 1)) for _ in range(6)]
    xs = [Value(rng.uniform(-1, 1)) for _ in range(6)]
    out = dot_fn(ws, xs)
    assert isinstance(out, Value), f"return a Value, got {type(out).__name__}"
    expected = math.fsum(w.data * x.data for w, x in zip(ws, xs))
    assert abs(out.data - expected) <= 1e-12, (
        f"the dot product is {expected!r}, got {out.data!r}"
    )
    nodes = len(topological_order(out))
    assert nodes == len(ws) + len(xs) + 1, (
        f"the graph of a fused dot of 6 weights and 6 inputs is those 12 leaves and one node; "
        f"yours has {nodes} nodes: make one Value whose children are ws and xs"
    )
    out.backward()
    for name, vs, others in (("w", ws, xs), ("x", xs, ws)):
        for i, (v, other) in enumerate(zip(vs, others)):
            assert abs(v.grad - other.data) <= 1e-12, (
                f"d dot / d {name}{i} is the matching {'x' if name == 'w' else 'w'}{i} = "
                f"{other.data!r}; backward() gave {v.grad!r}: check the local gradients' order"
            )
    a = Value(1.5)  # the same Value on both sides: x . x, whose gradient is 2x
    square = dot_fn([a], [a])
    square.backward()
    assert abs(a.grad - 3.0) <= 1e-12, (
        f"dot([a], [a]) = a^2 has gradient 2a = 3.0 at a = 1.5; backward() gave {a.grad!r}"
    )
    return (
        "my_dot is right: one node for the whole sum, and the gradients of every w and x"
    )
