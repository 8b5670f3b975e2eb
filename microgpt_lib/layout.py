"""Memory layout: one matrix stored four ways, and what each way costs in bytes and time.

    to_storage(a, storage)         a numpy matrix as nested lists, a flat list, array('d') or numpy
    deep_getsizeof(obj)            sys.getsizeof of a container and everything in it, each object once
    traced_allocations(build)      bytes and memory blocks that build() leaves allocated (tracemalloc)
    StridedView                    rows, columns and transposes of a flat buffer, without copying
    matvec_nested / matvec_flat    y = A x in pure Python: nested lists, a flat row-major buffer
    matvec_numba                   the very same flat loop, compiled by numba
    inner_loop_instructions(fn)    the bytecode the interpreter runs once per element
    scale(a, order=...)            one traversal of a 2-D array, row by row or column by column (numba)
    container(kind, values)        a layer's weights in a dict, a dataclass, __slots__ or a namedtuple
    access_loop(expression)        a loop that evaluates one expression many times, to time it
    lookup_instruction(loop)       the specialised bytecode CPython settled on for that expression
    footprint_rows, row_view_rows, matvec_rows, traversal_rows, access_rows   the measurements
    suite_layout(options)          the chapter's benchmark: python -m microgpt_lib.bench layout

The chapter (notebooks/03_memory_layout.ipynb) measures every claim with these functions.
"""

from __future__ import annotations

import argparse
import array
import dis
import sys
import tracemalloc
from collections import namedtuple
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator, Sequence

import numba
import numpy as np

from microgpt_lib import bench
from microgpt_lib.autograd import paused_gc
from microgpt_lib.config import LayerParams

# --------------------------------------------------------------------------------------------
# four storages and their footprint


STORAGES = ("nested lists", "flat list", "array.array", "numpy")


def to_storage(a: np.ndarray, storage: str) -> Any:
    """A float64 matrix as one of STORAGES (a copy, always in row-major order)."""
    a = np.ascontiguousarray(_as_float64(a, "a", ndim=2))  # C order: row 0, then row 1, ...
    if storage == "nested lists":
        return a.tolist()  # a list of rows, each a list of pointers to Python float objects
    if storage == "flat list":
        return a.ravel().tolist()  # one list of pointers, row after row
    if storage == "array.array":
        return array.array("d", a.tobytes())  # the raw 8-byte doubles, row after row
    if storage == "numpy":
        return a.copy()  # raw doubles too, plus a shape and strides that say how to read them
    raise ValueError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")


def storages(a: np.ndarray) -> dict[str, Any]:
    """The same matrix in every storage, by name."""
    return {storage: to_storage(a, storage) for storage in STORAGES}


def deep_getsizeof(obj: Any) -> int:
    """sys.getsizeof(obj) plus that of everything it holds, following lists, tuples, dicts, sets.

    Each object is counted once, however many places refer to it (a float shared by two rows
    costs its bytes once). Anything else (float, str, array, ndarray, ...) counts its own
    getsizeof, which for array.array and an ndarray that owns its data includes the data.
    """
    seen: set[int] = set()
    stack, total = [obj], 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return total


@dataclass
class Allocations:
    """What building something left allocated, as the memory allocator saw it."""

    bytes: int  # bytes requested and not freed (the allocator may round each block up a little)
    blocks: int  # separate pieces of memory: one per float object, per list's item array, ...


def _call(build: Callable[[], Any]) -> Any:
    return build()  # every allocation the build makes has this line in its traceback


_CALL_LINE = _call.__code__.co_firstlineno + 1
_TRACE_DEPTH = 64  # frames kept per allocation: enough to reach back to _call


def traced_allocations(build: Callable[[], Any]) -> Allocations:
    """Run build() under tracemalloc and report the memory its result holds.

    tracemalloc records every allocation Python's allocators make (numpy's array buffers too),
    so unlike sys.getsizeof it counts *allocations*, including ones no object reports, such as
    a list's separate item array. Only allocations made inside build() count (so not those of
    other threads, e.g. Jupyter's). Two CPython habits would hide allocations, so we disarm them:
    build() runs once untraced first (one-time costs: caches, specialised bytecode), and the
    free lists where CPython keeps recently freed floats, lists and dicts for reuse (up to 100
    floats, 80 lists, 80 dicts) are used up before the traced run, so that every object the
    build makes is a fresh allocation. The cyclic garbage collector is paused meanwhile. The
    result is kept alive until the second snapshot.
    """
    build()
    if tracemalloc.is_tracing():
        raise RuntimeError("tracemalloc is already tracing; stop it first (traced_allocations starts its own)")
    tracemalloc.start(_TRACE_DEPTH)
    try:
        # empty the free lists: hold on to more objects of each kind than they can keep
        drain = ([i + 0.5 for i in range(256)], [[] for _ in range(256)], [{} for _ in range(256)])
        with paused_gc():  # a collection in mid-build could run finalizers that allocate
            before = tracemalloc.take_snapshot()
            result = _call(build)
            after = tracemalloc.take_snapshot()
        del result, drain
    finally:
        tracemalloc.stop()
    inside_build = [tracemalloc.Filter(True, __file__, lineno=_CALL_LINE, all_frames=True)]
    diff = after.filter_traces(inside_build).compare_to(before.filter_traces(inside_build), "filename")
    return Allocations(sum(d.size_diff for d in diff), sum(d.count_diff for d in diff))


def bytes_per_instance(make: Callable[[], Any], count: int = 1000) -> float:
    """Bytes each object from make() holds, from tracemalloc, averaged over count objects."""
    holder: list[Any] = [None] * count  # allocated before tracing starts, so not counted

    def fill() -> None:
        for i in range(count):
            holder[i] = make()

    return traced_allocations(fill).bytes / count


def footprint_rows(n: int) -> list[dict[str, Any]]:
    """Bytes (two ways) and allocation count of an n x n float64 matrix in each storage."""
    a = np.random.default_rng(0).standard_normal((n, n))
    rows = []
    for storage in STORAGES:
        traced = traced_allocations(lambda: to_storage(a, storage))
        rows.append({"measurement": "footprint", "storage": storage, "n": n,
                     "getsizeof_bytes": deep_getsizeof(to_storage(a, storage)), "traced_bytes": traced.bytes,
                     "blocks": traced.blocks, "bytes_per_element": traced.bytes / (n * n)})
    return rows


# --------------------------------------------------------------------------------------------
# views: a window onto a flat buffer


def _index(value: Any, size: int, axis: int) -> int:
    """A checked, non-negative index along one axis (negative counts from the end, as in Python)."""
    try:
        index = value.__index__()
    except AttributeError:
        raise TypeError(f"indices must be integers, got {type(value).__name__} {value!r}") from None
    if not -size <= index < size:
        raise IndexError(f"index {index} is out of range for axis {axis} with size {size}")
    return index + size if index < 0 else index


class StridedView:
    """A vector or matrix that is a window onto a flat buffer: numpy's idea, in pure Python.

    Element (i, j) lives at ``buffer[offset + i * strides[0] + j * strides[1]]``. A row, a
    column or the transpose is a new view of the same buffer: only the shape, strides and
    offset change, no element is copied, and writing through a view writes the buffer.
    Strides here count elements; numpy's count bytes (8 per float64).
    """

    __slots__ = ("buffer", "shape", "strides", "offset")

    def __init__(self, buffer: Any, shape: Sequence[int], strides: Sequence[int] | None = None,
                 offset: int = 0) -> None:
        shape = tuple(shape)
        if len(shape) not in (1, 2) or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"shape must be 1 or 2 positive ints, got {shape}")
        strides = tuple(strides) if strides is not None else ((shape[1], 1) if len(shape) == 2 else (1,))
        if len(strides) != len(shape) or any(not isinstance(s, int) for s in strides):
            raise ValueError(f"strides must be {len(shape)} ints to match shape {shape}, got {strides}")
        # the first and last element the view can reach must both lie inside the buffer
        low = offset + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
        high = offset + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides))
        if low < 0 or high >= len(buffer):
            raise ValueError(f"a view of shape {shape}, strides {strides}, offset {offset} reaches elements "
                             f"{low}..{high}, outside a buffer of {len(buffer)} elements")
        self.buffer, self.shape, self.strides, self.offset = buffer, shape, strides, offset

    @classmethod
    def _unchecked(cls, buffer: Any, shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> StridedView:
        """A view made from a checked one (a row, a column, the transpose): it is in bounds already."""
        view = object.__new__(cls)
        view.buffer, view.shape, view.strides, view.offset = buffer, shape, strides, offset
        return view

    def _position(self, index: Any) -> int:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) != len(self.shape):
            raise IndexError(f"a view of shape {self.shape} needs {len(self.shape)} indices, got {len(index)}")
        return self.offset + sum(_index(i, n, axis) * s
                                 for axis, (i, n, s) in enumerate(zip(index, self.shape, self.strides)))

    def __getitem__(self, index: Any) -> Any:
        """view[i, j] is an element; for a matrix, view[i] is row i (a view)."""
        if len(self.shape) == 2 and not isinstance(index, tuple):
            return self.row(index)
        return self.buffer[self._position(index)]

    def __setitem__(self, index: Any, value: Any) -> None:
        self.buffer[self._position(index)] = value

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(self.shape[0]))

    def row(self, i: int) -> StridedView:
        """Row i: a vector view starting at row i, stepping along the columns."""
        self._need_matrix("row")
        return self._unchecked(self.buffer, self.shape[1:], self.strides[1:],
                               self.offset + _index(i, self.shape[0], 0) * self.strides[0])

    def column(self, j: int) -> StridedView:
        """Column j: a vector view starting at column j, stepping a whole row at a time."""
        self._need_matrix("column")
        return self._unchecked(self.buffer, self.shape[:1], self.strides[:1],
                               self.offset + _index(j, self.shape[1], 1) * self.strides[1])

    @property
    def T(self) -> StridedView:
        """The transpose: the same buffer with shape and strides swapped."""
        return self._unchecked(self.buffer, self.shape[::-1], self.strides[::-1], self.offset)

    @property
    def is_contiguous(self) -> bool:
        """True if the elements are adjacent in the buffer, row after row (C order)."""
        expected = (self.shape[1], 1) if len(self.shape) == 2 else (1,)
        return all(s == e for n, s, e in zip(self.shape, self.strides, expected) if n > 1)

    def tolist(self) -> list[Any]:
        """The elements as (nested) lists: a copy."""
        if len(self.shape) == 1:
            return [self.buffer[self.offset + j * self.strides[0]] for j in range(self.shape[0])]
        return [row.tolist() for row in self]

    def copy(self) -> StridedView:
        """A contiguous copy in a new list."""
        flat = self.tolist() if len(self.shape) == 1 else [x for row in self.tolist() for x in row]
        return StridedView(flat, self.shape)

    def _need_matrix(self, what: str) -> None:
        if len(self.shape) != 2:
            raise ValueError(f"{what}() needs a matrix view, this one has shape {self.shape}")

    def __repr__(self) -> str:
        return f"StridedView(shape={self.shape}, strides={self.strides}, offset={self.offset})"


def padded(a: np.ndarray, pad: int) -> np.ndarray:
    """A copy of a 2-D array whose rows lie pad elements further apart than they need to.

    The result is a view of a (rows, cols + pad) buffer: same values, row stride (cols + pad)
    elements. Padding breaks power-of-two strides, which map a column onto few cache sets.
    """
    a = _as_float64(a, "a", ndim=2)
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    view = np.zeros((a.shape[0], a.shape[1] + pad))[:, :a.shape[1]]
    view[...] = a
    return view


# --------------------------------------------------------------------------------------------
# matrix-vector products, one per storage


def matvec_nested_loop(a: list[list[float]], x: Sequence[float], y: list[float]) -> None:
    """y[i] = sum_j a[i][j] * x[j], a given as a list of rows."""
    for i, row in enumerate(a):
        total = 0.0
        for j in range(len(x)):
            total += row[j] * x[j]
        y[i] = total


def matvec_flat_loop(a: Any, rows: int, cols: int, x: Any, y: Any) -> None:
    """y[i] = sum_j a[i * cols + j] * x[j], a given as one flat row-major buffer."""
    for i in range(rows):
        total = 0.0
        base = i * cols  # where row i starts
        for j in range(cols):
            total += a[base + j] * x[j]
        y[i] = total


matvec_flat_compiled = numba.njit(matvec_flat_loop)  # the same source, compiled to machine code


def matvec_nested(a: list[list[float]], x: Sequence[float]) -> list[float]:
    """y = A x in pure Python, A as nested lists (one list per row)."""
    if not isinstance(a, list) or not a or not all(isinstance(row, list) for row in a):
        raise TypeError("a must be a non-empty list of rows (lists)")
    bad = next((i for i, row in enumerate(a) if len(row) != len(x)), None)
    if bad is not None:
        raise ValueError(f"row {bad} of a has {len(a[bad])} elements, but x has {len(x)}: "
                         "every row needs one element per entry of x")
    y = [0.0] * len(a)
    matvec_nested_loop(a, x, y)
    return y


def matvec_flat(a: Sequence[float], rows: int, cols: int, x: Sequence[float]) -> list[float]:
    """y = A x in pure Python, A as a flat row-major buffer (a list or an array.array)."""
    _check_flat(len(a), rows, cols, len(x))
    y = [0.0] * rows
    matvec_flat_loop(a, rows, cols, x, y)
    return y


def matvec_numba(a: Any, rows: int, cols: int, x: Any) -> np.ndarray:
    """y = A x by matvec_flat_loop compiled with numba; a is a flat float64 buffer.

    a and x may be numpy arrays or anything with a float64 buffer (array('d') is used in
    place, without a copy).
    """
    a, x = _as_float64(a, "a", ndim=1), _as_float64(x, "x", ndim=1)
    _check_flat(len(a), rows, cols, len(x))
    y = np.empty(rows)
    matvec_flat_compiled(a, rows, cols, x, y)
    return y


def _check_flat(length: int, rows: int, cols: int, x_length: int) -> None:
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if length != rows * cols:
        raise ValueError(f"a has {length} elements, but rows x cols = {rows} x {cols} = {rows * cols}")
    if x_length != cols:
        raise ValueError(f"x has {x_length} elements, but A has {cols} columns")


def _as_float64(value: Any, name: str, ndim: int) -> np.ndarray:
    """value as a float64 ndarray of the given rank, without copying, or a clear error."""
    array_ = np.asarray(value)
    if array_.dtype != np.float64:
        raise TypeError(f"{name} must hold float64 numbers, got dtype {array_.dtype}")
    if array_.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array_.shape}"
                         + (" (pass the flat buffer, e.g. A.ravel())" if ndim == 1 else ""))
    return array_


def inner_loop_instructions(fn: Callable[..., Any], adaptive: bool = False) -> list[dis.Instruction]:
    """The bytecode of fn's innermost loop: what the interpreter executes once per element.

    A loop ends in a backward jump to its start; the innermost loop is the shortest such span.
    adaptive=True shows the specialised instructions CPython (3.11+) has swapped in for the
    generic ones after watching fn run (e.g. BINARY_SUBSCR became BINARY_SUBSCR_DICT).
    """
    instructions = list(dis.get_instructions(fn, adaptive=adaptive))
    loops = [(ins.argval, ins.offset) for ins in instructions if ins.opname.startswith("JUMP_BACKWARD")]
    if not loops:
        raise ValueError(f"{getattr(fn, '__name__', fn)!r} has no loop")
    start, end = min(loops, key=lambda span: span[1] - span[0])
    return [ins for ins in instructions if start <= ins.offset <= end]


# --------------------------------------------------------------------------------------------
# traversal order in compiled code


@numba.njit
def scale_by_rows(a, out, factor):
    """out = factor * a, visiting a row by row: consecutive j are neighbours in memory."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = factor * a[i, j]


@numba.njit
def scale_by_columns(a, out, factor):
    """out = factor * a, visiting a column by column: consecutive i are a whole row apart."""
    for j in range(a.shape[1]):
        for i in range(a.shape[0]):
            out[i, j] = factor * a[i, j]


SCALE_KERNELS = {"rows": scale_by_rows, "columns": scale_by_columns}


def scale(a: np.ndarray, factor: float = 2.0, order: str = "rows", out: np.ndarray | None = None) -> np.ndarray:
    """factor * a, computed in the given traversal order ('rows' or 'columns') by numba."""
    a = _as_float64(a, "a", ndim=2)
    if order not in SCALE_KERNELS:
        raise ValueError(f"order must be 'rows' or 'columns', got {order!r}")
    if out is None:
        out = np.empty_like(a)
    elif _as_float64(out, "out", ndim=2).shape != a.shape:
        raise ValueError(f"out has shape {out.shape}, a has shape {a.shape}")
    SCALE_KERNELS[order](a, out, float(factor))
    return out


# --------------------------------------------------------------------------------------------
# parameter containers


LAYER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LayerParams))

LayerTuple = namedtuple("LayerTuple", LAYER_FIELDS)  # a tuple whose positions also have names


class LayerSlots:
    """LayerParams' fields as __slots__: no per-object dict, each attribute at a fixed offset."""

    __slots__ = LAYER_FIELDS

    def __init__(self, *values: Any) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError(f"LayerSlots takes {len(self.__slots__)} values ({', '.join(self.__slots__)}), "
                            f"got {len(values)}")
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


CONTAINERS = ("dict[str]", "dataclass", "__slots__", "namedtuple")


def container(kind: str, values: Sequence[Any]) -> Any:
    """One layer's weights (in LAYER_FIELDS order) in one of the CONTAINERS."""
    if len(values) != len(LAYER_FIELDS):
        raise ValueError(f"expected {len(LAYER_FIELDS)} values ({', '.join(LAYER_FIELDS)}), got {len(values)}")
    if kind == "dict[str]":
        return dict(zip(LAYER_FIELDS, values))  # microgpt's way: state_dict["layer0.attn_wq"]
    if kind == "dataclass":
        return LayerParams(*values)  # the course's way (microgpt_lib.config)
    if kind == "__slots__":
        return LayerSlots(*values)
    if kind == "namedtuple":
        return LayerTuple(*values)
    raise ValueError(f"kind must be one of {', '.join(CONTAINERS)}; got {kind!r}")


def containers(values: Sequence[Any]) -> dict[str, Any]:
    """The same weights in every kind of container, by kind."""
    return {kind: container(kind, values) for kind in CONTAINERS}


# how each container reads its first weight; "p" alone is the baseline (just loading p)
ACCESS_EXPRESSIONS: dict[str, tuple[str, str]] = {
    "baseline (p itself)": ("dict[str]", "p"),
    "dict[str]": ("dict[str]", f'p["{LAYER_FIELDS[0]}"]'),
    "dataclass .attr": ("dataclass", f"p.{LAYER_FIELDS[0]}"),
    "__slots__ .attr": ("__slots__", f"p.{LAYER_FIELDS[0]}"),
    "namedtuple .attr": ("namedtuple", f"p.{LAYER_FIELDS[0]}"),
    "namedtuple [0]": ("namedtuple", "p[0]"),
}


def access_loop(expression: str, unroll: int = 10) -> Callable[[Any, int], None]:
    """A function loop(p, n) that evaluates `expression` (written in terms of p) n * unroll times.

    The expression is written out `unroll` times per iteration so the loop's own cost is shared
    by many evaluations; the generated source is in loop.source.
    """
    body = "\n".join(f"        x = {expression}" for _ in range(unroll))
    source = f"def loop(p, n):\n    for _ in range(n):\n{body}\n"
    namespace: dict[str, Any] = {}
    try:
        exec(compile(source, f"<access_loop {expression}>", "exec"), namespace)
    except SyntaxError as error:
        raise ValueError(f"not a Python expression: {expression!r} ({error.msg})") from None
    loop = namespace["loop"]
    loop.source = source
    return loop


def lookup_instruction(loop: Callable[..., Any]) -> str:
    """The instruction(s) an access_loop runs for its expression, as CPython specialised them.

    Call after the loop has run: what is left of its inner loop once the loop's own
    instructions (iterate, load p, store x, jump back) are set aside.
    """
    scaffolding = ("FOR_ITER", "STORE_FAST", "LOAD_FAST", "LOAD_CONST", "JUMP_BACKWARD", "NOP", "CACHE")
    ops = [ins.opname for ins in inner_loop_instructions(loop, adaptive=True)]
    return " ".join(dict.fromkeys(op for op in ops if not op.startswith(scaffolding)))


# --------------------------------------------------------------------------------------------
# the measurements, and the benchmark suite


MATVEC_KERNELS = {  # kernel -> (family, storage)
    "python-nested": ("python", "nested lists"),
    "python-flat-list": ("python", "flat list"),
    "python-flat-array": ("python", "array.array"),
    "numba-flat": ("numba", "numpy (flat buffer)"),
    "numpy": ("blas", "numpy"),
}


def matvec_rows(sizes: Sequence[int], *, rounds: int = 5, python_max_n: int = 1024) -> list[dict[str, Any]]:
    """y = A x timed for every storage at each n (pure Python only up to python_max_n), one thread."""
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a, x = rng.standard_normal((n, n)), rng.standard_normal(n)
        s, xl, xa = storages(a), x.tolist(), array.array("d", x)
        flat = a.ravel()
        calls = {"python-nested": lambda: matvec_nested(s["nested lists"], xl),
                 "python-flat-list": lambda: matvec_flat(s["flat list"], n, n, xl),
                 "python-flat-array": lambda: matvec_flat(s["array.array"], n, n, xa),
                 "numba-flat": lambda: matvec_numba(flat, n, n, x),
                 "numpy": lambda: a @ x}
        if n > python_max_n:
            calls = {k: f for k, f in calls.items() if MATVEC_KERNELS[k][0] != "python"}
        with bench.blas_threads_limited(1):  # one core for every storage
            timings = bench.measure_interleaved(calls, repeats=rounds, min_time=0.01)
        for kernel, t in timings.items():
            family, storage = MATVEC_KERNELS[kernel]
            rows.append({"measurement": "matvec", "kernel": kernel, "family": family, "storage": storage,
                         "n": n, "dtype": "float64", "threads": 1, **t.as_row(),
                         "gflops": bench.gflops(2 * n * n, t.median_s), "ns_per_element": t.median_s / (n * n) * 1e9})
    return rows


def traversal_rows(sizes: Sequence[int], *, rounds: int = 5, pad: int = 8) -> list[dict[str, Any]]:
    """scale() row by row and column by column at each n; powers of two also with padded rows."""
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        variants = [("", rng.standard_normal((n, n)))]
        if n & (n - 1) == 0 and pad:  # a power of two: the padded layout too
            variants.append((f"-padded{pad}", padded(variants[0][1], pad)))
        for suffix, a in variants:
            out = padded(np.zeros((n, n)), pad) if suffix else np.empty_like(a)
            # the compiled kernels themselves: scale()'s checks would cost more than a small walk
            calls = {f"{order}{suffix}": (lambda kernel=kernel, a=a, out=out: kernel(a, out, 2.0))
                     for order, kernel in SCALE_KERNELS.items()}
            for name, t in bench.measure_interleaved(calls, repeats=rounds, min_time=0.01).items():
                rows.append({"measurement": "traversal", "kernel": f"scale-by-{name}", "family": "numba",
                             "order": name.split("-")[0], "n": n, "row_stride": a.strides[0] // 8,
                             "matrix_bytes": a.size * 8, "dtype": "float64", "threads": 1, **t.as_row(),
                             "ns_per_element": t.median_s / (n * n) * 1e9})
    return rows


def row_view_rows(lengths: Sequence[int], *, rounds: int = 5) -> list[dict[str, Any]]:
    """Seconds to get one row of a 4-row matrix whose rows have the given lengths, per storage."""
    rows = []
    for cols in lengths:
        a = np.arange(4.0 * cols).reshape(4, cols)
        s = storages(a)
        flat, nested, view = s["flat list"], s["nested lists"], StridedView(s["flat list"], (4, cols))
        calls = {"flat list slice (copy)": lambda: flat[2 * cols:3 * cols],
                 "StridedView.row (view)": lambda: view.row(2),
                 "numpy a[i] (view)": lambda: a[2],
                 "nested a[i] (reference)": lambda: nested[2]}
        for name, t in bench.measure_interleaved(calls, repeats=rounds, min_time=0.005).items():
            rows.append({"measurement": "row", "kernel": name, "family": "numpy" if "numpy" in name else "python",
                         "cols": cols, **t.as_row()})
    return rows


def access_rows(rounds: int = 15, iterations: int = 1000, unroll: int = 10) -> list[dict[str, Any]]:
    """Nanoseconds per read of one weight from each container, and the bytes each container holds.

    ns_per_read includes the loop and the store to x; the baseline row (x = p) is that overhead
    alone, so ns_over_baseline is the lookup itself (about 1 ns resolution: it can come out
    slightly negative when a lookup costs next to nothing).
    """
    values = [np.zeros((1, 1)) for _ in LAYER_FIELDS]
    boxes = containers(values)
    loops = {label: access_loop(expr, unroll) for label, (_, expr) in ACCESS_EXPRESSIONS.items()}
    calls = {label: (lambda loop=loops[label], p=boxes[kind]: loop(p, iterations))
             for label, (kind, _) in ACCESS_EXPRESSIONS.items()}
    timings = bench.measure_interleaved(calls, repeats=rounds, min_time=0.002)  # short samples, many rounds
    per_read = {label: t.median_s / (iterations * unroll) for label, t in timings.items()}
    baseline = per_read["baseline (p itself)"]
    rows = []
    for label, seconds in per_read.items():
        kind, expression = ACCESS_EXPRESSIONS[label]
        is_baseline = expression == "p"
        rows.append({"measurement": "access", "kernel": label, "family": "python",
                     "container": None if is_baseline else kind, "expression": expression,
                     "instruction": lookup_instruction(loops[label]),
                     "ns_per_read": seconds * 1e9, "ns_over_baseline": (seconds - baseline) * 1e9,
                     "container_bytes": None if is_baseline else
                     bytes_per_instance(lambda kind=kind: container(kind, values))})
    return rows


MATVEC_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
TRAVERSAL_SIZES = [100, 180, 300, 500, 700, 1000, 1400, 2000, 2900, 4000, 256, 512, 1024, 2048]


def suite_layout(options: argparse.Namespace) -> list[dict[str, Any]]:
    """The chapter's measurements as rows: footprint, matvec per storage, traversal order, access.

    --sizes sets the matvec sizes; pure Python runs up to N where N*N <= python_max_n**3
    (as many multiply-adds as the largest pure-Python matmul). --quick: small sizes, 3 rounds.
    """
    rounds = 3 if options.quick else options.repeats
    matvec_sizes = options.sizes or ([64, 256] if options.quick else MATVEC_SIZES)
    python_max_n = int(options.python_max_n ** 1.5)
    rows = footprint_rows(64 if options.quick else 256)
    rows += matvec_rows(matvec_sizes, rounds=rounds, python_max_n=python_max_n)
    rows += traversal_rows([300, 256] if options.quick else TRAVERSAL_SIZES, rounds=rounds)
    rows += row_view_rows([10, 1000] if options.quick else [10, 100, 1000, 10_000], rounds=rounds)
    rows += access_rows(rounds=max(rounds, 15), iterations=200 if options.quick else 1000)
    return rows
