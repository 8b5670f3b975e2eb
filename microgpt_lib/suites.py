"""The bench suites by name, and the command line that runs them.

    python -m microgpt_lib.bench SUITE [--out FILE] [--record] [--quick] [options]

Each chapter's lab module has its suite, a plain function ``suite(options) -> list[dict]``;
SUITES names them as "module:function", imported only when that suite runs. A new chapter adds
one line here. No notebook imports this module, so adding a suite stales no stored output.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

from . import bench, machine

SUITES: dict[str, str] = {
    "peak": "microgpt_lib.bench_lab:suite_peak",
    "matmul-intro": "microgpt_lib.bench_lab:suite_matmul_intro",
    "autograd": "microgpt_lib.autograd_lab:suite_autograd",
    "scalar-gpt": "microgpt_lib.scalar_gpt_lab:suite_scalar_gpt",
    "layout": "microgpt_lib.layout_lab:suite_layout",
    "matmul": "microgpt_lib.kernels_lab:suite_matmul",
    "blas": "microgpt_lib.blas_lab:suite_blas",
    "gpu": "microgpt_lib.device_lab:suite_gpu",
    "optim": "microgpt_lib.optim_lab:suite_optim",
    "gpt": "microgpt_lib.gpt_lab:suite_gpt",
    "train": "microgpt_lib.train_lab:suite_train",
}

Suite = Callable[[bench.SuiteOptions], list[dict[str, Any]]]


def resolve_suite(name: str) -> Suite:
    """The suite function registered under name (imported now), or an error listing the names."""
    if name not in SUITES:
        raise SystemExit(
            f"unknown suite {name!r}; the suites are: {', '.join(sorted(SUITES))}"
        )
    module, _, attr = SUITES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m microgpt_lib.bench",
        description="Run a benchmark suite and write its results.",
    )
    parser.add_argument("suite", help="one of: " + ", ".join(sorted(SUITES)))
    parser.add_argument(
        "--out", help="write results here (.json, or .csv for the rows alone)"
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help=f"also write {bench.RESULTS_DIR.name}/<machine>--<suite>.json",
    )
    parser.add_argument(
        "--machine", help="machine label for --record (default: from the CPU/GPU)"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="sizes to sweep (N, node counts, ...)"
    )
    parser.add_argument(
        "--dtypes",
        "--dtype",
        nargs="+",
        choices=["float64", "float32", "bfloat16", "float16"],
    )
    parser.add_argument(
        "--threads", type=int, help="threads for threaded kernels (default: all)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="timed repeats per measurement (median reported)",
    )
    parser.add_argument(
        "--python-max-n", type=int, default=128, help="largest N for pure-Python kernels"
    )
    parser.add_argument("--steps", type=int, help="training steps for model suites")
    parser.add_argument(
        "--quick", action="store_true", help="smaller, faster run (tests and CI)"
    )
    return parser


def options_from(args: argparse.Namespace) -> bench.SuiteOptions:
    """The parsed command line as SuiteOptions (its checks give the error messages)."""
    try:
        return bench.SuiteOptions(
            quick=args.quick,
            sizes=args.sizes,
            dtypes=args.dtypes,
            threads=args.threads,
            repeats=args.repeats,
            python_max_n=args.python_max_n,
            steps=args.steps,
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    suite = resolve_suite(args.suite)
    rows = suite(options_from(args))
    hardware = machine.hardware_info()
    command = " ".join(
        ["python -m microgpt_lib.bench", *(sys.argv[1:] if argv is None else argv)]
    )
    result = bench.make_result(
        args.suite,
        rows,
        command=command,
        hardware=hardware,
        machine=args.machine or machine.machine_name(hardware),
    )
    print(bench.format_rows(result["rows"]))
    if args.out:
        print(f"wrote {bench.save_results(result, args.out)}")
    if args.record:
        path = bench.recorded_path(result["machine"], args.suite)
        print(f"recorded {bench.save_results(result, path)}")
    return result


if __name__ == "__main__":
    bench.run_command_line(main)
