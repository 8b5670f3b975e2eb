"""Memory layout: one matrix stored four ways, views onto a flat buffer, and weight containers.

    to_storage(a, storage)         a numpy matrix as nested lists, a flat list, array('d') or numpy
    StridedView                    rows, columns and transposes of a flat buffer, without copying
    padded(a, pad)                 the same matrix with its rows further apart (breaks 2^k strides)
    matvec_nested / matvec_flat    y = A x in pure Python: nested lists, a flat row-major buffer
    matvec_numba                   the very same flat loop, compiled by numba (fastmath or not)
    scale(a, order=...)            one traversal of a 2-D array, row by row or column by column
    container(kind, values)        a layer's weights in a dict, dataclass, __slots__ or namedtuple

What each storage costs in bytes is measured with bench.traced_allocations and
bench.deep_getsizeof; the chapter's timings are in layout_lab.
"""

from __future__ import annotations

import array
from collections import namedtuple
from dataclasses import fields
from typing import Any, Iterator, Sequence

import numba
import numpy as np

from .config import LayerParams

# --------------------------------------------------------------------------------------------
# four storages and their footprint


STORAGES = ("nested lists", "flat list", "array.array", "numpy")


def to_storage(a: np.ndarray, storage: str) -> Any:
    """A float64 matrix as one of STORAGES (a copy, always in row-major order)."""
    a = np.ascontiguousarray(_as_float64(a, "a", ndim=2))  # C order: row 0, row 1, ...
    if storage == "nested lists":
        # a list of rows, each a list of pointers to Python float objects
        return a.tolist()
    if storage == "flat list":
        # one list of pointers, row after row
        return a.ravel().tolist()
    if storage == "array.array":
        # the raw 8-byte doubles, row after row
        return array.array("d", a.tobytes())
    if storage == "numpy":
        # raw doubles too, plus a shape and strides that say how to read them
        return a.copy()
    raise ValueError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")


def storages(a: np.ndarray) -> dict[str, Any]:
    """The same matrix in every storage, by name."""
    return {storage: to_storage(a, storage) for storage in STORAGES}


# --------------------------------------------------------------------------------------------
# views: a window onto a flat buffer


def _index(value: Any, size: int, axis: int) -> int:
    """A checked, non-negative index along one axis (negative counts from the end, as in Python)."""
    try:
        index = value.__index__()
    except AttributeError:
        raise TypeError(
            f"indices must be integers, got {type(value).__name__} {value!r}"
        ) from None
    if not -size <= index < size:
        raise IndexError(
            f"index {index} is out of range for axis {axis} with size {size}"
        )
    return index + size if index < 0 else index


class StridedView:
    """A vector or matrix that is a window onto a flat buffer: numpy's idea, in pure Python.

    Element (i, j) lives at ``buffer[offset + i * strides[0] + j * strides[1]]``. A row, a
    column or the transpose is a new view of the same buffer: only the shape, strides and
    offset change, no element is copied, and writing through a view writes the buffer.
    Strides here count elements; numpy's count bytes (8 per float64).
    """

    __slots__ = ("buffer", "shape", "strides", "offset")

    def __init__(
        self,
        buffer: Any,
        shape: Sequence[int],
        strides: Sequence[int] | None = None,
        offset: int = 0,
    ) -> None:
        shape = tuple(shape)
        if len(shape) not in (1, 2) or any(
            not isinstance(s, int) or s < 1 for s in shape
        ):
            raise ValueError(f"shape must be 1 or 2 positive ints, got {shape}")
        strides = (
            tuple(strides)
            if strides is not None
            else ((shape[1], 1) if len(shape) == 2 else (1,))
        )
        if len(strides) != len(shape) or any(not isinstance(s, int) for s in strides):
            raise ValueError(
                f"strides must be {len(shape)} ints to match shape {shape}, got {strides}"
            )
        # the first and last element the view can reach must both lie inside the buffer
        low = offset + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
        high = offset + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides))
        if low < 0 or high >= len(buffer):
            raise ValueError(
                f"a view of shape {shape}, strides {strides}, offset {offset} reaches elements "
                f"{low}..{high}, outside a buffer of {len(buffer)} elements"
            )
        self.buffer, self.shape, self.strides, self.offset = (
            buffer,
            shape,
            strides,
            offset,
        )

    @classmethod
    def _unchecked(
        cls, buffer: Any, shape: tuple[int, ...], strides: tuple[int, ...], offset: int
    ) -> StridedView:
        """A view made from a checked one (a row, a column, the transpose): in bounds already."""
        view = object.__new__(cls)
        view.buffer, view.shape, view.strides, view.offset = (
            buffer,
            shape,
            strides,
            offset,
        )
        return view

    def _position(self, index: Any) -> int:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) != len(self.shape):
            raise IndexError(
                f"a view of shape {self.shape} needs {len(self.shape)} indices, got {len(index)}"
            )
        return self.offset + sum(
            _index(i, n, axis) * s
            for axis, (i, n, s) in enumerate(zip(index, self.shape, self.strides))
        )

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
        return self._unchecked(
            self.buffer,
            self.shape[1:],
            self.strides[1:],
            self.offset + _index(i, self.shape[0], 0) * self.strides[0],
        )

    def column(self, j: int) -> StridedView:
        """Column j: a vector view starting at column j, stepping a whole row at a time."""
        self._need_matrix("column")
        return self._unchecked(
            self.buffer,
            self.shape[:1],
            self.strides[:1],
            self.offset + _index(j, self.shape[1], 1) * self.strides[1],
        )

    @property
    def T(self) -> StridedView:
        """The transpose: the same buffer with shape and strides swapped."""
        return self._unchecked(
            self.buffer, self.shape[::-1], self.strides[::-1], self.offset
        )

    @property
    def is_contiguous(self) -> bool:
        """True if the elements are adjacent in the buffer, row after row (C order)."""
        expected = (self.shape[1], 1) if len(self.shape) == 2 else (1,)
        return all(s == e for n, s, e in zip(self.shape, self.strides, expected) if n > 1)

    def tolist(self) -> list[Any]:
        """The elements as (nested) lists: a copy."""
        if len(self.shape) == 1:
            return [
                self.buffer[self.offset + j * self.strides[0]]
                for j in range(self.shape[0])
            ]
        return [row.tolist() for row in self]

    def copy(self) -> StridedView:
        """A contiguous copy in a new list."""
        flat = (
            self.tolist()
            if len(self.shape) == 1
            else [x for row in self.tolist() for x in row]
        )
        return StridedView(flat, self.shape)

    def _need_matrix(self, what: str) -> None:
        if len(self.shape) != 2:
            raise ValueError(
                f"{what}() needs a matrix view, this one has shape {self.shape}"
            )

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
    view = np.zeros((a.shape[0], a.shape[1] + pad))[:, : a.shape[1]]
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


# the same source, compiled to machine code twice: as written (each `total +=` waits for the
# one before: the additions happen in the order the loop says), and with fastmath, which lets
# the compiler reorder the sum into several partial sums and use vector instructions
matvec_flat_compiled = numba.njit(matvec_flat_loop)
matvec_flat_fastmath = numba.njit(fastmath=True)(matvec_flat_loop)


def matvec_nested(a: list[list[float]], x: Sequence[float]) -> list[float]:
    """y = A x in pure Python, A as nested lists (one list per row)."""
    if not isinstance(a, list) or not a or not all(isinstance(row, list) for row in a):
        raise TypeError("a must be a non-empty list of rows (lists)")
    bad = next((i for i, row in enumerate(a) if len(row) != len(x)), None)
    if bad is not None:
        raise ValueError(
            f"row {bad} of a has {len(a[bad])} elements, but x has {len(x)}: "
            "every row needs one element per entry of x"
        )
    y = [0.0] * len(a)
    matvec_nested_loop(a, x, y)
    return y


def matvec_flat(
    a: Sequence[float], rows: int, cols: int, x: Sequence[float]
) -> list[float]:
    """y = A x in pure Python, A as a flat row-major buffer (a list or an array.array)."""
    _check_flat(len(a), rows, cols, len(x))
    y = [0.0] * rows
    matvec_flat_loop(a, rows, cols, x, y)
    return y


def matvec_numba(
    a: Any, rows: int, cols: int, x: Any, fastmath: bool = False
) -> np.ndarray:
    """y = A x by matvec_flat_loop compiled with numba; a is a flat float64 buffer.

    a and x may be numpy arrays or anything with a float64 buffer (array('d') is used in
    place, without a copy). fastmath=True runs the build that may reorder the sum.
    """
    a, x = _as_float64(a, "a", ndim=1), _as_float64(x, "x", ndim=1)
    _check_flat(len(a), rows, cols, len(x))
    y = np.empty(rows)
    (matvec_flat_fastmath if fastmath else matvec_flat_compiled)(a, rows, cols, x, y)
    return y


def _check_flat(length: int, rows: int, cols: int, x_length: int) -> None:
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"{name} must be an int, got {type(value).__name__} {value!r}"
            )
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if length != rows * cols:
        raise ValueError(
            f"a has {length} elements, but rows x cols = {rows} x {cols} = {rows * cols}"
        )
    if x_length != cols:
        raise ValueError(f"x has {x_length} elements, but A has {cols} columns")


def _as_float64(value: Any, name: str, ndim: int) -> np.ndarray:
    """value as a float64 ndarray of the given rank, without copying, or a clear error."""
    array_ = np.asarray(value)
    if array_.dtype != np.float64:
        raise TypeError(f"{name} must hold float64 numbers, got dtype {array_.dtype}")
    if array_.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D, got shape {array_.shape}"
            + (" (pass the flat buffer, e.g. A.ravel())" if ndim == 1 else "")
        )
    return array_


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


def scale(
    a: np.ndarray, factor: float = 2.0, order: str = "rows", out: np.ndarray | None = None
) -> np.ndarray:
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

# a tuple whose positions also have names
LayerTuple = namedtuple("LayerTuple", LAYER_FIELDS)


class LayerSlots:
    """LayerParams' fields as __slots__: no per-object dict, each attribute at a fixed offset."""

    __slots__ = LAYER_FIELDS

    def __init__(self, *values: Any) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError(
                f"LayerSlots takes {len(self.__slots__)} values ({', '.join(self.__slots__)}), "
                f"got {len(values)}"
            )
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


CONTAINERS = ("dict[str]", "dataclass", "__slots__", "namedtuple")


def container(kind: str, values: Sequence[Any]) -> Any:
    """One layer's weights (in LAYER_FIELDS order) in one of the CONTAINERS."""
    if len(values) != len(LAYER_FIELDS):
        raise ValueError(
            f"expected {len(LAYER_FIELDS)} values ({', '.join(LAYER_FIELDS)}), got {len(values)}"
        )
    if kind == "dict[str]":
        # microgpt's way: state_dict["layer0.attn_wq"]
        return dict(zip(LAYER_FIELDS, values))
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
