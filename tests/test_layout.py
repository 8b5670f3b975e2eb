"""microgpt_lib.layout: storages, strided views, matvec per storage, traversal, containers."""

import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_lib import layout

RTOL = 1e-12


def random_problem(rows, cols, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, cols)), rng.standard_normal(cols)


def matvec_every_storage(a, x):
    """y = A x from each kernel, each given its own storage of the same matrix."""
    rows, cols = a.shape
    s = layout.storages(a)
    return {
        "nested": layout.matvec_nested(s["nested lists"], x.tolist()),
        "flat list": layout.matvec_flat(s["flat list"], rows, cols, x.tolist()),
        "array.array": layout.matvec_flat(
            s["array.array"], rows, cols, array.array("d", x)
        ),
        "numba": layout.matvec_numba(a.ravel(), rows, cols, x),
        "numba fastmath": layout.matvec_numba(a.ravel(), rows, cols, x, fastmath=True),
        "numba on array.array": layout.matvec_numba(
            s["array.array"], rows, cols, array.array("d", x)
        ),
    }


# --- matvec ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 7), (5, 13), (13, 5), (64, 64), (3, 100)])
def test_every_matvec_matches_numpy(shape):
    a, x = random_problem(*shape)
    expected = a @ x
    for name, y in matvec_every_storage(a, x).items():
        np.testing.assert_allclose(
            np.asarray(y), expected, rtol=RTOL, atol=1e-12, err_msg=name
        )


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_matvec_property_every_shape(rows, cols, seed):
    a, x = random_problem(rows, cols, seed)
    expected = a @ x
    for name, y in matvec_every_storage(a, x).items():
        np.testing.assert_allclose(
            np.asarray(y), expected, rtol=RTOL, atol=1e-12, err_msg=name
        )


def test_numba_kernel_is_the_python_loop_compiled():
    assert layout.matvec_flat_compiled.py_func is layout.matvec_flat_loop


def test_fastmath_kernel_is_the_same_loop_compiled_with_licence_to_reorder():
    assert layout.matvec_flat_fastmath.py_func is layout.matvec_flat_loop
    assert layout.matvec_flat_fastmath.targetoptions.get("fastmath")
    assert not layout.matvec_flat_compiled.targetoptions.get("fastmath")


def test_matvec_nested_rejects_ragged_rows_and_wrong_x():
    with pytest.raises(ValueError, match="row 1 of a has 2 elements, but x has 3"):
        layout.matvec_nested([[1.0, 2.0, 3.0], [1.0, 2.0]], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="x has 2"):
        layout.matvec_nested([[1.0, 2.0, 3.0]], [1.0, 2.0])
    with pytest.raises(TypeError, match="list of rows"):
        layout.matvec_nested([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(TypeError, match="non-empty"):
        layout.matvec_nested([], [])


@pytest.mark.parametrize("fn", [layout.matvec_flat, layout.matvec_numba])
def test_matvec_flat_rejects_bad_shapes(fn):
    a, x = random_problem(3, 4)
    flat, xs = a.ravel(), x
    with pytest.raises(
        ValueError, match=r"a has 12 elements, but rows x cols = 4 x 4 = 16"
    ):
        fn(flat, 4, 4, np.ones(4))
    with pytest.raises(ValueError, match="x has 3 elements, but A has 4 columns"):
        fn(flat, 3, 4, xs[:3])
    with pytest.raises(ValueError, match="rows must be >= 1"):
        fn(flat, 0, 4, xs)
    with pytest.raises(TypeError, match="cols must be an int"):
        fn(flat, 3, 4.0, xs)


def test_matvec_numba_rejects_2d_and_wrong_dtype():
    a, x = random_problem(3, 4)
    with pytest.raises(ValueError, match=r"a must be 1-D, got shape \(3, 4\).*ravel"):
        layout.matvec_numba(a, 3, 4, x)
    with pytest.raises(TypeError, match="a must hold float64 numbers, got dtype float32"):
        layout.matvec_numba(a.ravel().astype(np.float32), 3, 4, x)


# --- storages and footprints --------------------------------------------------------------


def test_storages_hold_the_same_numbers_row_major():
    a = np.arange(6.0).reshape(2, 3)
    s = layout.storages(a)
    assert s["nested lists"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert s["flat list"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(s["array.array"]) == s["flat list"] and s["array.array"].typecode == "d"
    assert np.array_equal(s["numpy"], a) and not np.shares_memory(s["numpy"], a)
    # a transposed (F-ordered) input is stored row-major all the same
    assert layout.storages(a.T)["flat list"] == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_storages_reject_non_matrices():
    with pytest.raises(ValueError, match="storage must be one of"):
        layout.to_storage(np.ones((2, 2)), "linked list")
    with pytest.raises(ValueError, match="a must be 2-D"):
        layout.storages(np.ones(3))
    with pytest.raises(TypeError, match="float64"):
        layout.storages(np.ones((2, 2), dtype=np.int64))


# --- strided views ------------------------------------------------------------------------


def view_of(a):
    return layout.StridedView(a.ravel().tolist(), a.shape)


def test_view_indexes_like_numpy():
    a = np.arange(12.0).reshape(3, 4)
    v = view_of(a)
    assert v[1, 2] == a[1, 2] and v[-1, -1] == a[-1, -1]
    assert v.row(1).tolist() == a[1].tolist() == v[1].tolist()
    assert v.column(2).tolist() == a[:, 2].tolist()
    assert v.T.tolist() == a.T.tolist() and v.T.T.tolist() == a.tolist()
    assert v.T.row(3).tolist() == a.T[3].tolist()
    assert v.T.strides == (1, 4) and v.T.shape == (4, 3)
    assert [r.tolist() for r in v] == a.tolist() and len(v) == 3


def test_views_share_the_buffer():
    a = np.arange(6.0).reshape(2, 3)
    v = view_of(a)
    column = v.column(1)
    column[1] = -1.0  # writes through to the buffer: no copy was made
    assert v.buffer[4] == -1.0 and v[1, 1] == -1.0 and v.T[1, 1] == -1.0
    assert column.buffer is v.buffer and v.T.buffer is v.buffer
    copy = v.copy()
    copy[0, 0] = 99.0
    assert v[0, 0] == 0.0 and copy.is_contiguous


def test_contiguity():
    v = view_of(np.zeros((3, 4)))
    assert v.is_contiguous and v.row(1).is_contiguous
    assert not v.T.is_contiguous and not v.column(0).is_contiguous
    assert layout.StridedView(
        [0.0] * 5, (1, 5), strides=(99, 1)
    ).is_contiguous  # one row: stride unused


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    pad=st.integers(0, 3),
    offset=st.integers(0, 3),
    transpose=st.booleans(),
    data=st.data(),
)
def test_view_property_padded_and_offset_buffers(
    rows, cols, pad, offset, transpose, data
):
    """A view with a row stride of cols + pad, starting at offset, sees what numpy sees."""
    buffer = np.arange(offset + rows * (cols + pad), dtype=float)
    expected = buffer[offset:].reshape(rows, cols + pad)[:, :cols]
    v = layout.StridedView(buffer.tolist(), (rows, cols), (cols + pad, 1), offset)
    if transpose:
        v, expected = v.T, expected.T
    assert v.tolist() == expected.tolist()
    i = data.draw(st.integers(0, v.shape[0] - 1))
    j = data.draw(st.integers(0, v.shape[1] - 1))
    assert v[i, j] == expected[i, j]
    assert (
        v.row(i).tolist() == expected[i].tolist()
        and v.column(j).tolist() == expected[:, j].tolist()
    )


def test_view_reverse_strides():
    v = layout.StridedView([0.0, 1.0, 2.0, 3.0], (4,), (-1,), offset=3)
    assert v.tolist() == [3.0, 2.0, 1.0, 0.0]


def test_view_bad_shapes_and_indices_give_clear_errors():
    buffer = [0.0] * 12
    with pytest.raises(
        ValueError, match=r"offset 1 reaches elements 1\.\.12, outside a buffer of 12"
    ):
        layout.StridedView(buffer, (3, 4), offset=1)
    with pytest.raises(ValueError, match="reaches elements"):
        layout.StridedView(buffer, (4, 4))
    with pytest.raises(ValueError, match="shape must be 1 or 2 positive ints"):
        layout.StridedView(buffer, (2, 2, 3))
    with pytest.raises(ValueError, match="shape must be"):
        layout.StridedView(buffer, (0, 3))
    with pytest.raises(ValueError, match="strides must be 2 ints"):
        layout.StridedView(buffer, (3, 4), strides=(4,))
    v = layout.StridedView(buffer, (3, 4))
    with pytest.raises(
        IndexError, match="index 3 is out of range for axis 0 with size 3"
    ):
        v[3, 0]
    with pytest.raises(IndexError, match="axis 1 with size 4"):
        v.column(-5)
    with pytest.raises(IndexError, match="needs 2 indices, got 3"):
        v[0, 0, 0]
    with pytest.raises(TypeError, match="indices must be integers, got float"):
        v[1.0, 2]
    with pytest.raises(ValueError, match="row\\(\\) needs a matrix view"):
        v.row(0).row(0)
    assert v[np.int64(1), np.int64(2)] == 0.0  # numpy integers are fine
    assert repr(v) == "StridedView(shape=(3, 4), strides=(4, 1), offset=0)"


def test_padded_copy_has_a_longer_row_stride():
    a = np.arange(12.0).reshape(3, 4)
    p = layout.padded(a, 8)
    assert np.array_equal(p, a) and p.strides == (12 * 8, 8) and not p.flags.c_contiguous
    with pytest.raises(ValueError, match="pad must be a non-negative int"):
        layout.padded(a, -1)


# --- traversal order ----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["rows", "columns"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (3, 17), (64, 64)])
def test_scale_any_order_matches_numpy(order, shape):
    a = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_array_equal(layout.scale(a, 2.5, order), 2.5 * a)
    p, out = (
        layout.padded(a, 8),
        layout.padded(np.zeros(shape), 8),
    )  # non-contiguous in and out
    assert layout.scale(p, 2.0, order, out=out) is out
    np.testing.assert_array_equal(out, 2.0 * a)


def test_scale_rejects_bad_input():
    a = np.ones((3, 4))
    with pytest.raises(ValueError, match="order must be 'rows' or 'columns'"):
        layout.scale(a, order="diagonal")
    with pytest.raises(ValueError, match=r"out has shape \(4, 3\), a has shape \(3, 4\)"):
        layout.scale(a, out=np.ones((4, 3)))
    with pytest.raises(ValueError, match="a must be 2-D"):
        layout.scale(np.ones(3))


# --- parameter containers -----------------------------------------------------------------


def test_containers_hold_the_same_weights():
    values = [object() for _ in layout.LAYER_FIELDS]
    boxes = layout.containers(values)
    first = layout.LAYER_FIELDS[0]
    assert boxes["dict[str]"][first] is values[0]
    for kind in ("dataclass", "__slots__", "namedtuple"):
        assert [getattr(boxes[kind], f) for f in layout.LAYER_FIELDS] == values
    assert boxes["namedtuple"][0] is values[0]
    assert not hasattr(boxes["__slots__"], "__dict__")
    with pytest.raises(ValueError, match="expected 6 values"):
        layout.containers(values[:2])
    with pytest.raises(ValueError, match="kind must be one of"):
        layout.container("list", values)
    with pytest.raises(TypeError, match="LayerSlots takes 6 values"):
        layout.LayerSlots(1, 2)
