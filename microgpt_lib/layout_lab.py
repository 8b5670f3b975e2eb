"""Chapter 03's experiments: what each storage costs, in bytes and in time.

footprint_rows(n)              bytes (getsizeof and tracemalloc) and blocks of each storage
inner_loop_instructions(fn)    the bytecode the interpreter runs once per element
access_loop(expression)        a loop that evaluates one expression many times, to time it
lookup_instruction(loop)       the specialised bytecode CPython settled on for that expression
matvec_rows, add_chain_rows, stride_rows, traversal_rows, row_view_rows, access_rows
                               the timings
smallest_cache_holding(nbytes) which cache level a working set fits in
column_sets(stride, rows, g)   how many sets of a cache one column's lines can use
comparison_rows(runs)          several runs side by side, at the sizes they all measured
check_strides, check_row_major_index, check_faster_order   the exercises' checkers
suite_layout(options)          python -m microgpt_lib.bench layout
"""

from __future__ import annotations

import array
import dis
import mmap
from typing import Any, Callable, Sequence

import numba
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
    scale_by_columns,
    scale_by_rows,
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
    "numba-flat-fastmath": ("numba", "numpy (flat buffer)"),
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
        flat = a.ravel()
        calls = {}
        if (
            n <= python_max_n
        ):  # the Python copies of a large matrix are gigabytes of objects
            s, xl, xa = storages(a), x.tolist(), array.array("d", x)
            calls = {
                "python-nested": lambda: matvec_nested(s["nested lists"], xl),
                "python-flat-list": lambda: matvec_flat(s["flat list"], n, n, xl),
                "python-flat-array": lambda: matvec_flat(s["array.array"], n, n, xa),
            }
        calls |= {
            "numba-flat": lambda: matvec_numba(flat, n, n, x),
            "numba-flat-fastmath": lambda: matvec_numba(flat, n, n, x, fastmath=True),
            "numpy": lambda: a @ x,
        }
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


def sum_loop(x, repeats):
    """The sum of x, repeats times over: one running total, as matvec's `total +=`."""
    total = 0.0
    for _ in range(repeats):
        for i in range(x.shape[0]):
            total += x[i]
    return total


# as written, every addition waits for the one before it; fastmath lets the compiler split
# the total into partial sums that run side by side (and in vector registers)
sum_chain = numba.njit(sum_loop)
sum_chain_fastmath = numba.njit(fastmath=True)(sum_loop)


def add_chain_rows(
    length: int = 2048, repeats: int = 200, rounds: int = 5
) -> list[dict[str, Any]]:
    """Nanoseconds per addition of sum_loop over a small (L1-resident) array, with and without
    fastmath: the cost of an addition that must wait for the previous one, and of one that
    need not."""
    x = np.random.default_rng(0).standard_normal(length)
    calls = {
        "dependent-add": lambda: sum_chain(x, repeats),
        "dependent-add-fastmath": lambda: sum_chain_fastmath(x, repeats),
    }
    timings = bench.measure_interleaved(calls, repeats=rounds, min_time=0.01)
    return [
        {
            "kind": "chain",
            "kernel": kernel,
            "family": "numba",
            "length": length,
            "dtype": "float64",
            "threads": 1,
            **t.as_row(),
            "ns_per_add": t.median_s / (length * repeats) * 1e9,
        }
        for kernel, t in timings.items()
    ]


@numba.njit
def sum_every(x, step):
    """The sum of x[::step] (len(x) a multiple of 8 * step), in 8 independent running sums.

    Eight sums, so that the additions never wait for each other and the loop is limited by
    how fast memory delivers x, not by the adder.
    """
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    for i in range(0, x.shape[0] - 7 * step, 8 * step):
        t0 += x[i]
        t1 += x[i + step]
        t2 += x[i + 2 * step]
        t3 += x[i + 3 * step]
        t4 += x[i + 4 * step]
        t5 += x[i + 5 * step]
        t6 += x[i + 6 * step]
        t7 += x[i + 7 * step]
    return t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7


def stride_bytes_default() -> int:
    """A buffer well beyond L2 (8 x L2, 32 MiB to 256 MiB), so lines come from L3 or memory."""
    return min(256 << 20, max(32 << 20, 8 * machine.cache_sizes()["L2"]))


STRIDE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # in doubles


def stride_rows(
    steps: Sequence[int] = STRIDE_STEPS,
    *,
    nbytes: int | None = None,
    rounds: int = 5,
) -> list[dict[str, Any]]:
    """Seconds per pass of sum_every(x, step) over one buffer of nbytes, for each step.

    Every pass reads len(x) / step doubles; lines_touched is how many cache lines hold them
    (all of them while the stride is under a line, then one per double read).
    """
    nbytes = nbytes or stride_bytes_default()
    line = machine.cache_line_bytes()
    round_ = 8 * max(steps)  # elements one round of 8 reads spans at the largest step
    x = np.ones(max(1, nbytes // 8 // round_) * round_)  # a whole number of rounds
    calls = {step: (lambda step=step: sum_every(x, step)) for step in steps}
    timings = bench.measure_interleaved(calls, repeats=rounds, min_time=0.005)
    rows = []
    for step, t in timings.items():
        reads = len(x) // step
        rows.append(
            {
                "kind": "stride",
                "kernel": "sum-every",
                "family": "numba",
                "step": step,
                "stride_bytes": 8 * step,
                "buffer_bytes": x.nbytes,
                "reads": reads,
                "lines_touched": x.nbytes // max(line, 8 * step),
                **t.as_row(),
                "ns_per_read": t.median_s / reads * 1e9,
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


# --------------------------------------------------------------------------------------------
# what the caches can hold


PAGE_BYTES = mmap.PAGESIZE  # the operating system's page: 4 KiB on most x86 machines


def smallest_cache_holding(nbytes: int, caches: dict[str, int]) -> str:
    """The first cache level (of caches, e.g. machine.cpu_info()["caches"]) at least nbytes
    big, or "main memory"."""
    for level, size in sorted(caches.items(), key=lambda item: item[1]):
        if nbytes <= size:
            return level
    return "main memory"


def column_sets(
    row_stride_bytes: int,
    rows: int,
    geometry: dict[str, int | None],
    page_bytes: int = PAGE_BYTES,
) -> dict[str, Any] | None:
    """How many sets of one cache the lines of a column can fall in (a column that starts at
    the beginning of a line, rows elements a row stride apart); None if the OS gave no geometry.

    A line goes to the set numbered (address // line_bytes) % sets. The cache uses the
    *physical* address, and a program only ever sees virtual ones: the two share only the
    offset within a page (the low 12 bits, for 4 KiB pages). When sets * line_bytes <=
    page_bytes, every set bit lies in the page offset (most L1 caches are built so) and the
    count is exact. Otherwise only the low set bits are known; each pattern of them can land
    in any of sets * line_bytes // page_bytes sets, wherever the OS put the page, and the
    count is an upper bound ("exact": False). Huge pages (2 MiB) would make it exact again.

    Returns {"sets", "exact", "of" (the cache's sets), "bytes" (what those sets hold)}.
    """
    line, sets, ways = geometry["line_bytes"], geometry["sets"], geometry["ways"]
    if not (line and sets):
        return None
    offsets = [i * row_stride_bytes for i in range(rows)]
    if sets * line <= page_bytes:
        used, exact = len({(a // line) % sets for a in offsets}), True
    else:
        in_page = {(a % page_bytes) // line for a in offsets}  # the set bits we can see
        used, exact = min(rows, len(in_page) * (sets * line // page_bytes)), False
    return {
        "sets": used,
        "exact": exact,
        "of": sets,
        "bytes": used * ways * line if ways else None,
    }


def comparison_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Several runs of the suite side by side: one row per figure, one column per run.

    runs maps a label (a machine, "this machine (now)") to its rows. Each matvec kernel that
    every run has is shown at the largest n that all of them timed, and the traversal gap
    (column order / row order) at the largest non-power-of-two n they share, so that every
    row compares like with like. A kernel or size that not all runs have is left out.
    """

    def sizes(rows: list[dict[str, Any]], kind: str, kernel: str) -> set[int]:
        return {r["n"] for r in rows if r.get("kind") == kind and r["kernel"] == kernel}

    def value(
        rows: list[dict[str, Any]], kind: str, kernel: str, n: int, key: str
    ) -> float:
        return next(
            r[key]
            for r in rows
            if r.get("kind") == kind and r["kernel"] == kernel and r["n"] == n
        )

    out = []
    for kernel in MATVEC_KERNELS:
        common = set.intersection(
            *(sizes(rows, "matvec", kernel) for rows in runs.values())
        )
        if common:
            n = max(common)
            out.append(
                {"figure": f"{kernel} GFLOP/s", "n": n}
                | {
                    label: value(rows, "matvec", kernel, n, "gflops")
                    for label, rows in runs.items()
                }
            )
    orders = ("scale-by-columns", "scale-by-rows")
    common = set.intersection(
        *(sizes(rows, "traversal", k) for rows in runs.values() for k in orders)
    )
    common = {n for n in common if n & (n - 1)}  # not a power of two
    if common:
        n = max(common)
        out.append(
            {"figure": "column order / row order", "n": n}
            | {
                label: value(rows, "traversal", orders[0], n, "ns_per_element")
                / value(rows, "traversal", orders[1], n, "ns_per_element")
                for label, rows in runs.items()
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# the exercises' checkers


STRIDE_QUIZ = (
    "a.T",
    "a[::2]",
    "a[:, ::3]",
    "a[1:4, 2:5]",
    "a[2]",
    "a[:, 4]",
    "a.T[::-1]",
)


def reference_strides() -> dict[str, tuple[int, ...]]:
    """Exercise 1's answer, reasoned out: the strides in bytes of each view in STRIDE_QUIZ."""
    row, col = (
        10 * 8,
        8,
    )  # a is 6 x 10 float64, row-major: 80 bytes per row, 8 per element
    return {
        "a.T": (col, row),  # the transpose swaps the strides
        "a[::2]": (2 * row, col),  # every other row: twice as far to the next one
        "a[:, ::3]": (row, 3 * col),  # every third column
        "a[1:4, 2:5]": (row, col),  # a slice moves the start (the offset), not the steps
        "a[2]": (col,),  # one row: a vector along the columns
        "a[:, 4]": (row,),  # one column: a vector that steps a whole row at a time
        "a.T[::-1]": (-col, row),  # walking an axis backwards: a negative stride
    }


def check_strides(predictions: dict[str, tuple[int, ...]]) -> str:
    """Exercise 1: your predicted strides (in bytes) for each view in STRIDE_QUIZ of
    a = np.zeros((6, 10)), checked against numpy's."""
    a = np.zeros((6, 10))
    missing = [view for view in STRIDE_QUIZ if view not in predictions]
    if missing:
        raise AssertionError(
            f"predict the strides of every view; missing: {', '.join(missing)}"
        )
    wrong = []
    for view in STRIDE_QUIZ:
        actual = eval(view, {"a": a})  # the quiz's own fixed expressions
        guess = tuple(predictions[view])
        if guess != actual.strides:
            hint = (
                " (numpy's strides count bytes, not elements: 8 per float64)"
                if tuple(8 * g for g in guess) == actual.strides
                else ""
            )
            wrong.append(f"{view}: you said {guess}, numpy says {actual.strides}{hint}")
    if wrong:
        raise AssertionError("wrong strides:\n  " + "\n  ".join(wrong))
    return f"all {len(STRIDE_QUIZ)} strides right: views change strides and offset, never data"


def reference_row_major_index(index: Sequence[int], shape: Sequence[int]) -> int:
    """Exercise 2's answer: where element `index` of an array of `shape` sits in a flat
    row-major buffer (element (i, j, k) at (i * shape[1] + j) * shape[2] + k)."""
    offset = 0
    for i, n in zip(index, shape):
        offset = offset * n + i  # each earlier axis steps over all the later ones
    return offset


def check_row_major_index(fn: Callable[[tuple[int, ...], tuple[int, ...]], int]) -> str:
    """Exercise 2: fn(index, shape) must give the flat row-major position of index, for any
    number of axes (compared with np.ravel_multi_index)."""
    rng = np.random.default_rng(0)
    shapes = [(7,), (3, 5), (5, 3), (2, 3, 4), (4, 1, 6), (2, 3, 4, 5)]
    for shape in shapes:
        corners = [tuple(0 for _ in shape), tuple(n - 1 for n in shape)]
        randoms = [tuple(int(rng.integers(n)) for n in shape) for _ in range(5)]
        for index in corners + randoms:
            expected = int(np.ravel_multi_index(index, shape))
            got = fn(index, shape)
            if got != expected:
                raise AssertionError(
                    f"index {index} of shape {shape}: you gave {got}, row-major order puts "
                    f"it at {expected} (the last index moves fastest; one step of an axis "
                    "skips the product of all the later axes' sizes)"
                )
    return f"row-major index right for {len(shapes)} shapes of 1 to 4 axes"


def reference_faster_order(a: np.ndarray) -> str:
    """Exercise 3's answer: "rows" or "columns", whichever walk steps through a's memory in
    the smaller stride at the inner loop."""
    # scale_by_rows' inner loop moves along axis 1, scale_by_columns' along axis 0
    return "rows" if abs(a.strides[1]) <= abs(a.strides[0]) else "columns"


def faster_order_cases(n: int = 1200) -> dict[str, np.ndarray]:
    """Exercise 3's layouts: one n x n matrix in C order, Fortran order, and as views."""
    c = np.ones((n, n))
    f = np.asfortranarray(c)
    wide = np.ones((n, 2 * n))
    return {
        "C order": c,
        "Fortran order": f,
        "transpose of a C-order matrix": c.T,
        "every other column of an n x 2n matrix": wide[:, ::2],
    }


def check_faster_order(fn: Callable[[np.ndarray], str], n: int = 1200) -> str:
    """Exercise 3: fn(a) predicts "rows" or "columns": which of layout.scale_by_rows and
    layout.scale_by_columns is faster on a. Each prediction is checked by timing both walks
    (out has a's layout, as np.empty_like gives)."""
    report = []
    for label, a in faster_order_cases(n).items():
        guess = fn(a)
        if guess not in ("rows", "columns"):
            raise AssertionError(f"{label}: answer 'rows' or 'columns', got {guess!r}")
        out = np.empty_like(a)
        walks = {"rows": scale_by_rows, "columns": scale_by_columns}
        times = bench.measure_interleaved(
            {order: (lambda k=k: k(a, out, 2.0)) for order, k in walks.items()}, repeats=3
        )
        ns = {order: t.median_s / a.size * 1e9 for order, t in times.items()}
        faster = min(ns, key=ns.get)
        measured = f"rows {ns['rows']:.2f} ns, columns {ns['columns']:.2f} ns per element"
        if guess != faster:
            raise AssertionError(
                f"{label} (strides {a.strides} bytes): you predicted {guess}, but {faster} "
                f"is faster ({measured}): the fast walk's inner loop takes the smaller stride"
            )
        report.append(f"{label}: {faster} ({measured})")
    return "every prediction confirmed by the clock:\n  " + "\n  ".join(report)


# --------------------------------------------------------------------------------------------
# the suite


MATVEC_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
# smooth sizes (not powers of two), then powers of two (these also run with padded rows)
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
    """The chapter's measurements as rows: footprint, matvec per storage, the cost of an
    addition, stride, traversal order, rows and views, container access.

    --sizes sets the matvec sizes; pure Python runs up to N where N*N <= python_max_n**3
    (as many multiply-adds as the largest pure-Python matmul). --quick: small sizes, 3 rounds.
    """
    rounds, quick = options.rounds, options.quick
    matvec_sizes = options.sizes or ([64, 256] if quick else MATVEC_SIZES)
    python_max_n = int(options.python_max_n**1.5)
    rows = footprint_rows(64 if quick else 256)
    rows += matvec_rows(matvec_sizes, rounds=rounds, python_max_n=python_max_n)
    rows += add_chain_rows(repeats=20 if quick else 200, rounds=rounds)
    rows += stride_rows((1, 8, 64) if quick else STRIDE_STEPS, rounds=rounds)
    rows += traversal_rows([300, 256] if quick else TRAVERSAL_SIZES, rounds=rounds)
    rows += row_view_rows([10, 1000] if quick else [10, 100, 1000, 10_000], rounds=rounds)
    rows += access_rows(rounds=max(rounds, 15), iterations=200 if quick else 1000)
    return rows
