"""The suite table and the command line."""

import pytest

from microgpt_lib import bench, suites


def test_cli_writes_a_result_file(tmp_path, capsys):
    out = tmp_path / "x.json"
    suites.main(
        ["matmul-intro", "--sizes", "4", "8", "--repeats", "2", "--out", str(out)]
    )
    result = bench.load_results(out)
    assert (
        result["command"]
        == f"python -m microgpt_lib.bench matmul-intro --sizes 4 8 --repeats 2 --out {out}"
    )
    assert {(r["kernel"], r["n"]) for r in result["rows"]} == {
        (k, n) for k in ("python-ijk", "numpy") for n in (4, 8)
    }
    for row in result["rows"]:
        assert {"suite", *bench.MATMUL_COLUMNS} <= set(row), row
    assert "wrote" in capsys.readouterr().out


def test_cli_rejects_an_unknown_suite_listing_the_suites():
    with pytest.raises(
        SystemExit, match="unknown suite 'nope'; the suites are: .*matmul-intro.*peak"
    ):
        suites.main(["nope"])


def test_every_registered_suite_resolves():
    for name in suites.SUITES:
        assert callable(suites.resolve_suite(name)), name


def test_cli_rejects_bad_options_by_name():
    with pytest.raises(SystemExit, match="repeats must be a positive integer"):
        suites.main(["matmul-intro", "--repeats", "0"])


def test_cli_records_for_this_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench.recorded_path, "__defaults__", (tmp_path,))
    result = suites.main(
        ["matmul-intro", "--sizes", "4", "--repeats", "1", "--record", "--machine", "m"]
    )
    assert (tmp_path / "m--matmul-intro.json").is_file() and result["machine"] == "m"
    assert "recorded" in capsys.readouterr().out
