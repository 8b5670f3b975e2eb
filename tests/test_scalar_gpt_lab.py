"""microgpt_lib.scalar_gpt_lab: graph sizes and the side-by-side runs."""

from microgpt_lib import scalar_gpt as sg
from microgpt_lib import scalar_gpt_lab as lab

TOL = 1e-9


def test_fast_graph_is_much_smaller(config, tokenizer):
    model = sg.ScalarGPT.init(config)
    tokens = tokenizer.encode_document("emma")
    nodes_plain, edges_plain = lab.graph_size(sg.document_loss(model, tokens, "plain"))
    nodes_fast, edges_fast = lab.graph_size(sg.document_loss(model, tokens, "fast"))
    # both graphs contain the 4,192 parameters (the leaves); the plain one ~10x more on top
    assert nodes_fast > 4192 and nodes_plain - 4192 > 10 * (nodes_fast - 4192)
    assert edges_plain > 1.5 * edges_fast


def test_side_by_side_rows(names, tokenizer):
    rows = lab.side_by_side(
        names[:50], tokenizer, 2, variants=(("plain", False), ("fast", True))
    )
    assert [(r["impl"], r["gc"]) for r in rows] == [
        ("plain", "enabled"),
        ("fast", "paused"),
    ]
    for row in rows:
        assert (
            row["steps"] == 2 and len(row["losses"]) == 2 and row["max_loss_diff"] < TOL
        )
        assert row["ms_per_step"] > 0 and row["speedup"] > 0
        assert {f"{p}_ms" for p in lab.PHASES} <= set(row)
    assert rows[0]["nodes_per_step"] > rows[1]["nodes_per_step"]
    assert rows[0]["speedup"] == 1.0


def test_suite_runs_quick(suite_options):
    rows = lab.suite_scalar_gpt(suite_options(steps=2))
    assert [r["kind"] for r in rows] == ["step"] * 4 + ["curve"]
    assert len(rows[-1]["losses"]) == 2 and rows[-1]["samples"]
