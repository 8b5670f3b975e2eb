"""microgpt_lib.layout_lab: footprints, bytecode, access loops and the layout suite."""

import gc
import sys

import numpy as np
import pytest

from microgpt_lib import bench, layout, layout_lab


def test_flat_loop_costs_more_bytecodes_than_nested():
    nested = layout_lab.inner_loop_instructions(layout.matvec_nested_loop)
    flat = layout_lab.inner_loop_instructions(layout.matvec_flat_loop)
    assert len(flat) > len(nested)
    ops = [ins.opname for ins in flat]
    assert ops[-1].startswith("JUMP_BACKWARD") and "BINARY_SUBSCR" in ops
    # the difference is the index arithmetic: base + j
    assert [i.argrepr for i in flat if i.opname == "BINARY_OP"].count("+") == 1


def test_inner_loop_needs_a_loop():
    with pytest.raises(ValueError, match="has no loop"):
        layout_lab.inner_loop_instructions(lambda: 1)


def test_footprint_rows_show_boxing_costs_four_times_the_bytes():
    # earlier tests leave cyclic garbage; were the collector to free its floats while
    # traced_allocations drains the float free list, the build would reuse them untraced
    gc.collect()
    rows = {r["storage"]: r for r in layout_lab.footprint_rows(32)}
    assert set(rows) == set(layout.STORAGES)
    assert rows["numpy"]["bytes_per_element"] == pytest.approx(8, rel=0.2)
    assert rows["flat list"]["bytes_per_element"] == pytest.approx(32, rel=0.1)
    assert (
        rows["nested lists"]["blocks"]
        > rows["flat list"]["blocks"]
        > 100 * rows["numpy"]["blocks"]
    )
    for r in rows.values():  # the two ways of counting agree to a few dozen bytes
        assert abs(r["traced_bytes"] - r["getsizeof_bytes"]) <= 128


def test_access_loop_evaluates_the_expression():
    loop = layout_lab.access_loop("p.append(1)", unroll=3)
    seen = []
    loop(seen, 4)
    assert seen == [1] * 12 and loop.source.count("p.append(1)") == 3
    with pytest.raises(ValueError, match="not a Python expression"):
        layout_lab.access_loop("p.[")


def test_lookup_instruction_names_the_specialised_access():
    boxes = layout.containers([1.0] * 6)
    loop = layout_lab.access_loop('p["attn_wq"]', unroll=1)
    loop(boxes["dict[str]"], 100)  # let CPython watch it run
    assert "BINARY_SUBSCR" in layout_lab.lookup_instruction(loop)
    loop = layout_lab.access_loop("p.attn_wq", unroll=1)
    loop(boxes["__slots__"], 100)
    assert "LOAD_ATTR" in layout_lab.lookup_instruction(loop)


@pytest.mark.slow
def test_suite_layout_quick_rows(suite_options):
    rows = layout_lab.suite_layout(suite_options())
    kinds = {r["kind"] for r in rows}
    assert kinds == {
        "footprint",
        "matvec",
        "chain",
        "stride",
        "traversal",
        "row",
        "access",
    }
    matvec = [r for r in rows if r["kind"] == "matvec"]
    assert {r["kernel"] for r in matvec} == set(layout_lab.MATVEC_KERNELS)
    for r in matvec:
        assert set(bench.MATMUL_COLUMNS) <= set(r)
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["gflops"] > 0
    traversal = {r["kernel"] for r in rows if r["kind"] == "traversal"}
    assert {"scale-by-rows", "scale-by-columns", "scale-by-columns-padded8"} <= traversal
    access = {r["kernel"]: r for r in rows if r["kind"] == "access"}
    assert set(access) == set(layout_lab.ACCESS_EXPRESSIONS)
    assert (
        access["__slots__ .attr"]["container_bytes"]
        < access["dict[str]"]["container_bytes"]
    )
    assert access["__slots__ .attr"]["container_bytes"] == sys.getsizeof(
        layout.LayerSlots(*range(6))
    )


# --- the cost of an addition, the stride, the caches ------------------------------------------


def test_add_chain_rows_time_both_builds_of_one_loop():
    assert layout_lab.sum_chain.py_func is layout_lab.sum_chain_fastmath.py_func
    x = np.arange(10.0)
    assert layout_lab.sum_chain(x, 3) == layout_lab.sum_chain_fastmath(x, 3) == 135.0
    rows = {r["kernel"]: r for r in layout_lab.add_chain_rows(length=256, repeats=10)}
    assert set(rows) == {"dependent-add", "dependent-add-fastmath"}
    # the partial sums of fastmath run side by side: many times faster, never slower
    assert (
        rows["dependent-add-fastmath"]["ns_per_add"] < rows["dependent-add"]["ns_per_add"]
    )


def test_sum_every_sums_every_step_th_element():
    x = np.arange(64.0)
    for step in (1, 2, 4, 8):
        assert layout_lab.sum_every(x, step) == x[::step].sum()


def test_stride_rows_count_reads_and_lines():
    rows = layout_lab.stride_rows((1, 8, 64), nbytes=1 << 20, rounds=1)
    line = layout_lab.machine.cache_line_bytes()
    for r in rows:
        assert r["reads"] == r["buffer_bytes"] // r["stride_bytes"]
        assert r["lines_touched"] == r["buffer_bytes"] // max(line, r["stride_bytes"])
        assert r["ns_per_read"] > 0


def test_smallest_cache_holding():
    caches = {"L1d": 32 << 10, "L2": 1 << 20, "L3": 32 << 20}
    assert layout_lab.smallest_cache_holding(1000, caches) == "L1d"
    assert layout_lab.smallest_cache_holding(2 << 20, caches) == "L3"
    assert layout_lab.smallest_cache_holding(64 << 20, caches) == "main memory"


def test_column_sets_exact_within_a_page_and_a_bound_beyond():
    l1 = {"line_bytes": 64, "sets": 64, "ways": 8}  # 64 x 64 B = one 4 KiB page: exact
    l2 = {"line_bytes": 64, "sets": 1024, "ways": 16}  # set bits above the page offset
    # rows 4 KiB apart: every line of the column has the same set bits in the page offset
    assert layout_lab.column_sets(4096, 100, l1, page_bytes=4096) == {
        "sets": 1,
        "exact": True,
        "of": 64,
        "bytes": 512,
    }
    bound = layout_lab.column_sets(4096, 100, l2, page_bytes=4096)
    assert bound == {"sets": 16, "exact": False, "of": 1024, "bytes": 16 * 16 * 64}
    # one line of padding per row staggers the rows over every set
    assert layout_lab.column_sets(4096 + 64, 100, l1, page_bytes=4096)["sets"] == 64
    assert layout_lab.column_sets(4096 + 64, 100, l2, page_bytes=4096)["sets"] == 100
    # huge pages put every set bit in the page offset: exact again
    assert layout_lab.column_sets(4096, 100, l2, page_bytes=2 << 20)["exact"]
    assert (
        layout_lab.column_sets(4096, 10, {"line_bytes": None, "sets": None, "ways": None})
        is None
    )


def test_comparison_rows_compare_like_with_like():
    def run(matvec_sizes, traversal_sizes, gflops):
        rows = [
            {"kind": "matvec", "kernel": k, "n": n, "gflops": gflops}
            for k in ("python-nested", "numpy")
            for n in matvec_sizes
        ]
        rows += [
            {"kind": "traversal", "kernel": k, "n": n, "ns_per_element": ns}
            for k, ns in (("scale-by-columns", 6.0), ("scale-by-rows", 2.0))
            for n in traversal_sizes
        ]
        return rows

    table = layout_lab.comparison_rows(
        {
            "recorded": run([256, 512, 1024], [2900, 4000, 4096], 1.0),
            "now": run([256, 512], [2900, 4096], 2.0),
        }
    )
    assert [(r["figure"], r["n"]) for r in table] == [
        ("python-nested GFLOP/s", 512),
        ("numpy GFLOP/s", 512),
        ("column order / row order", 2900),  # 4096 is a power of two: not a smooth size
    ]
    assert table[0]["recorded"] == 1.0 and table[0]["now"] == 2.0
    assert table[2]["now"] == 3.0


# --- the exercises' checkers pass the reference and fail plausible mistakes -------------------


def test_check_strides():
    assert "right" in layout_lab.check_strides(layout_lab.reference_strides())
    in_elements = {
        k: tuple(s // 8 for s in v) for k, v in layout_lab.reference_strides().items()
    }
    with pytest.raises(AssertionError, match="count bytes, not elements"):
        layout_lab.check_strides(in_elements)
    forgot_the_step = {**layout_lab.reference_strides(), "a[::2]": (80, 8)}
    with pytest.raises(AssertionError, match=r"a\[::2\]: you said \(80, 8\)"):
        layout_lab.check_strides(forgot_the_step)
    with pytest.raises(AssertionError, match="missing: a.T"):
        layout_lab.check_strides({})


def test_check_row_major_index():
    assert "right" in layout_lab.check_row_major_index(
        layout_lab.reference_row_major_index
    )

    def column_major(index, shape):
        offset = 0
        for i, n in zip(reversed(index), reversed(shape)):
            offset = offset * n + i
        return offset

    def two_d_formula_generalised(index, shape):  # i * shape[1] + j, as if for any rank
        return sum(i * n for i, n in zip(index, tuple(shape[1:]) + (1,)))

    for wrong in (column_major, two_d_formula_generalised):
        with pytest.raises(AssertionError, match="row-major order puts it at"):
            layout_lab.check_row_major_index(wrong)


def test_check_faster_order():
    assert "confirmed" in layout_lab.check_faster_order(
        layout_lab.reference_faster_order, n=600
    )
    with pytest.raises(AssertionError, match="Fortran order"):
        layout_lab.check_faster_order(lambda a: "rows", n=600)

    def contiguity_is_not_the_question(a):
        # wrong for a strided view whose rows are still the short way through memory
        return "rows" if a.flags.c_contiguous else "columns"

    with pytest.raises(AssertionError, match="every other column"):
        layout_lab.check_faster_order(contiguity_is_not_the_question, n=600)
    with pytest.raises(AssertionError, match="answer 'rows' or 'columns'"):
        layout_lab.check_faster_order(lambda a: "diagonal", n=600)
