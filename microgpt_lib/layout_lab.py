"""Chapter 03's experiments: what each storage costs, in bytes and in time.

footprint_rows(n)              bytes (getsizeof and tracemalloc) and blocks of each storage
inner_loop_instructions(fn)    the bytecode the interpreter runs once per element
access_loop(expression)        a loop that evaluates one expression many times, to time it
lookup_instruction(loop)       the specialised bytecode CPython settled on for that expression
matvec_rows, traversal_rows, row_view_rows, access_rows   the timings
suite_layout(options)          python -m microgpt_lib.bench layout
"""

from __future__ import annotations

import array
import dis
from typing import Any, Callable, Sequence

import numpy as np

from . import bench, machine
from .layout import (
    LAYER_FIELDS,
    SCALE_KERNELS,
    STORAGES,
    StridedView,
    container,
    containers,
    matvec_flat,
    matvec_nested,
    matvec_numba,
    padded,
    storages,
    to_storage,
)

# --------------------------------------------------------------------------------------------
# bytes


def footprint_rows(n: int) -> list[dict[str, Any]]:
    """Bytes (two ways) and allocation count of an n x n float64 matrix in each storage."""
    a = np.random.default_rng(0).standard_normal((n, n))
    rows = []
    for storage in STORAGES:
        traced = bench.traced_allocations(lambda: to_storage(a, storage))
        rows.append(
            {
                "kind": "footprint",
                "storage": storage,
                "n": n,
                "getsizeof_bytes": bench.deep_getsizeof(to_storage(a, storage)),
                "traced_bytes": traced.bytes,
                "blocks": traced.blocks,
                "bytes_per_element": traced.bytes / (n * n),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# bytecode


def inner_loop_instructions(
    fn: Callable[..., Any], adaptive: bool = False
) -> list[dis.Instruction]:
    """The bytecode of fn's innermost loop: what the interpreter executes once per element.

    A loop ends in a backward jump to its start; the innermost loop is the shortest such span.
    adaptive=True shows the specialised instructions CPython (3.11+) has swapped in for the
    generic ones after watching fn run (e.g. BINARY_SUBSCR became BINARY_SUBSCR_DICT).
    """
    instructions = list(dis.get_instructions(fn, adaptive=adaptive))
    loops = [
        (ins.argval, ins.offset)
        for ins in instructions
        if ins.opname.startswith("JUMP_BACKWARD")
    ]
    if not loops:
        raise ValueError(f"{getattr(fn, '__name__', fn)!r} has no loop")
    start, end = min(loops, key=lambda span: span[1] - span[0])
    return [ins for ins in instructions if start <= ins.offset <= end]


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
        raise ValueError(
            f"not a Python expression: {expression!r} ({error.msg})"
        ) from None
    loop = namespace["loop"]
    loop.source = source
    return loop


def lookup_instruction(loop: Callable[..., Any]) -> str:
    """The instruction(s) an access_loop runs for its expression, as CPython specialised them.

    Call after the loop has run: what is left of its inner loop once the loop's own
    instructions (iterate, load p, store x, jump back) are set aside.
    """
    scaffolding = (
        "FOR_ITER",
        "STORE_FAST",
        "LOAD_FAST",
        "LOAD_CONST",
        "JUMP_BACKWARD",
        "NOP",
        "CACHE",
    )
    ops = [ins.opname for ins in inner_loop_instructions(loop, adaptive=True)]
    return " ".join(dict.fromkeys(op for op in ops if not op.startswith(scaffolding)))


# --------------------------------------------------------------------------------------------
# the measurements, and the suite


MATVEC_KERNELS = {  # kernel -> (family, storage)
    "python-nested": ("python", "nested lists"),
    "python-flat-list": ("python", "flat list"),
    "python-flat-array": ("python", "array.array"),
    "numba-flat": ("numba", "numpy (flat buffer)"),
    "numpy": ("blas", "numpy"),
}


def matvec_rows(
    sizes: Sequence[int], *, rounds: int = 5, python_max_n: int = 1024
) -> list[dict[str, Any]]:
    """y = A x timed for every storage at each n (pure Python up to python_max_n), one thread."""
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a, x = rng.standard_normal((n, n)), rng.standard_normal(n)
        s, xl, xa = storages(a), x.tolist(), array.array("d", x)
        flat = a.ravel()
        calls = {
            "python-nested": lambda: matvec_nested(s["nested lists"], xl),
            "python-flat-list": lambda: matvec_flat(s["flat list"], n, n, xl),
            "python-flat-array": lambda: matvec_flat(s["array.array"], n, n, xa),
            "numba-flat": lambda: matvec_numba(flat, n, n, x),
            "numpy": lambda: a @ x,
        }
        if n > python_max_n:
            calls = {k: f for k, f in calls.items() if MATVEC_KERNELS[k][0] != "python"}
        with machine.limit_blas_threads(1):  # one core for every storage
            timings = bench.measure_interleaved(calls, repeats=rounds, min_time=0.01)
        for kernel, t in timings.items():
            family, storage = MATVEC_KERNELS[kernel]
            rows.append(
                {
                    "kind": "matvec",
                    "kernel": kernel,
                    "family": family,
                    "storage": storage,
                    "n": n,
                    "dtype": "float64",
                    "threads": 1,
                    **t.as_row(),
                    "gflops": bench.gflops(2 * n * n, t.median_s),
                    "ns_per_element": t.median_s / (n * n) * 1e9,
                }
            )
    return rows


def traversal_rows(
    sizes: Sequence[int], *, rounds: int = 5, pad: int = 8
) -> list[dict[str, Any]]:
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
            calls = {
                f"{order}{suffix}": (
                    lambda kernel=kernel, a=a, out=out: kernel(a, out, 2.0)
                )
                for order, kernel in SCALE_KERNELS.items()
            }
            for name, t in bench.measure_interleaved(
                calls, repeats=rounds, min_time=0.01
            ).items():
                rows.append(
                    {
                        "kind": "traversal",
                        "kernel": f"scale-by-{name}",
                        "family": "numba",
                        "order": name.split("-")[0],
                        "n": n,
                        "row_stride": a.strides[0] // 8,
                        "matrix_bytes": a.size * 8,
                        "dtype": "float64",
                        "threads": 1,
                        **t.as_row(),
                        "ns_per_element": t.median_s / (n * n) * 1e9,
                    }
                )
    return rows


def row_view_rows(lengths: Sequence[int], *, rounds: int = 5) -> list[dict[str, Any]]:
    """Seconds to get one row of a 4-row matrix whose rows have the given lengths, per storage."""
    rows = []
    for cols in lengths:
        a = np.arange(4.0 * cols).reshape(4, cols)
        s = storages(a)
        flat, nested, view = (
            s["flat list"],
            s["nested lists"],
            StridedView(s["flat list"], (4, cols)),
        )
        calls = {
            "flat list slice (copy)": lambda: flat[2 * cols : 3 * cols],
            "StridedView.row (view)": lambda: view.row(2),
            "numpy a[i] (view)": lambda: a[2],
            "nested a[i] (reference)": lambda: nested[2],
        }
        for name, t in bench.measure_interleaved(
            calls, repeats=rounds, min_time=0.005
        ).items():
            rows.append(
                {
                    "kind": "row",
                    "kernel": name,
                    "family": "numpy" if "numpy" in name else "python",
                    "cols": cols,
                    **t.as_row(),
                }
            )
    return rows


def access_rows(
    rounds: int = 15, iterations: int = 1000, unroll: int = 10
) -> list[dict[str, Any]]:
    """Nanoseconds per read of one weight from each container, and the bytes each container holds.

    ns_per_read includes the loop and the store to x; the baseline row (x = p) is that overhead
    alone, so ns_over_baseline is the lookup itself (about 1 ns resolution: it can come out
    slightly negative when a lookup costs next to nothing).
    """
    values = [np.zeros((1, 1)) for _ in LAYER_FIELDS]
    boxes = containers(values)
    loops = {
        label: access_loop(expr, unroll)
        for label, (_, expr) in ACCESS_EXPRESSIONS.items()
    }
    calls = {
        label: (lambda loop=loops[label], p=boxes[kind]: loop(p, iterations))
        for label, (kind, _) in ACCESS_EXPRESSIONS.items()
    }
    timings = bench.measure_interleaved(
        calls, repeats=rounds, min_time=0.002
    )  # short samples, many rounds
    per_read = {label: t.median_s / (iterations * unroll) for label, t in timings.items()}
    baseline = per_read["baseline (p itself)"]
    rows = []
    for label, seconds in per_read.items():
        kind, expression = ACCESS_EXPRESSIONS[label]
        is_baseline = expression == "p"
        rows.append(
            {
                "kind": "access",
                "kernel": label,
                "family": "python",
                "container": None if is_baseline else kind,
                "expression": expression,
                "instruction": lookup_instruction(loops[label]),
                "ns_per_read": seconds * 1e9,
                "ns_over_baseline": (seconds - baseline) * 1e9,
                "container_bytes": None
                if is_baseline
                else bench.bytes_per_instance(lambda kind=kind: container(kind, values)),
            }
        )
    return rows


MATVEC_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
TRAVERSAL_SIZES = [
    100,
    180,
    300,
    500,
    700,
    1000,
    1400,
    2000,
    2900,
    4000,
    256,
    512,
    1024,
    2048,
]


def suite_layout(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """The chapter's measurements as rows: footprint, matvec per storage, traversal order, access.

    --sizes sets the matvec sizes; pure Python runs up to N where N*N <= python_max_n**3
    (as many multiply-adds as the largest pure-Python matmul). --quick: small sizes, 3 rounds.
    """
    rounds = options.rounds
    matvec_sizes = options.sizes or ([64, 256] if options.quick else MATVEC_SIZES)
    python_max_n = int(options.python_max_n**1.5)
    rows = footprint_rows(64 if options.quick else 256)
    rows += matvec_rows(matvec_sizes, rounds=rounds, python_max_n=python_max_n)
    rows += traversal_rows(
        [300, 256] if options.quick else TRAVERSAL_SIZES, rounds=rounds
    )
    rows += row_view_rows(
        [10, 1000] if options.quick else [10, 100, 1000, 10_000], rounds=rounds
    )
    rows += access_rows(rounds=max(rounds, 15), iterations=200 if options.quick else 1000)
    return rows
