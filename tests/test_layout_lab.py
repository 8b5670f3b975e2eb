"""microgpt_lib.layout_lab: footprints, bytecode, access loops and the layout suite."""

import sys

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
    assert kinds == {"footprint", "matvec", "traversal", "row", "access"}
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
