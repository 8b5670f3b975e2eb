"""Measuring, for the whole course: timing, rates, rows, the collector, allocations, results.

    measure(fn), Timing         warm-up, repeats, median / min / max (+ GPU sync, + min-time mode)
    measure_interleaved(cases)  several functions timed round-robin, so noise hits them alike
    gflops, matmul_flops        throughput; percent_of_peak(g, peak) against a *measured* peak
    matmul_row, peak_rows       the row every matmul measurement and every peak is stored as
    with_percent_of_peak(rows, peaks)   each row against the peak of its dtype and threads
    SuiteOptions                what a bench suite may be told (python -m microgpt_lib.bench)
    paused_gc(), GCMeter        keep the cyclic collector out of a block; count what it does
    traced_allocations(build)   bytes and blocks build() leaves allocated (tracemalloc)
    peak_allocation(fn)         the most bytes one call of fn holds at once (tracemalloc)
    deep_getsizeof(obj)         sys.getsizeof of a container and everything in it
    make_result, save_results, load_results, recorded_results   result files, written atomically

The machine itself (its peak, caches, threads, provenance) is measured in microgpt_lib.machine;
the suites and the command line live in microgpt_lib.suites. This module imports neither.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
# Schema 2 names a row's experiment "kind" (schema 1: "measurement", "experiment" or "lesson"),
# the collector's default state "enabled" (schema 1 also said "on"), and the percent-of-peak
# column "percent_of_peak" (also "pct_of_peak"). Files are never rewritten: load_results reads
# schema 1 as schema 2 (upgrade_rows), so results recorded on other machines stay usable.
SCHEMA_VERSION = 2


# --------------------------------------------------------------------------------------------
# timing


@dataclass
class Timing:
    """Seconds per call: the median is the figure to quote, min/max show the spread."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    number: int  # calls per repeat (> 1 in min-time mode, for calls too fast to time one by one)
    times_s: list[float] = field(repr=False, default_factory=list)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.05 means the slowest repeat was 5% off the fastest."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0

    @classmethod
    def from_times(cls, times: list[float], number: int = 1) -> "Timing":
        """Summarise samples already taken (seconds per call each)."""
        if not times:
            raise ValueError("no samples to summarise")
        return cls(
            statistics.median(times),
            min(times),
            max(times),
            len(times),
            number,
            list(times),
        )

    def as_row(self) -> dict[str, float | int]:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "repeats": self.repeats,
            "number": self.number,
        }


def _no_sync() -> None:
    pass


def _sample(
    fn: Callable[[], Any],
    number: int,
    sync: Callable[[], Any],
    timer: Callable[[], float],
) -> float:
    """Seconds for ``number`` calls of fn in a row, with the device synced on both sides."""
    sync()
    start = timer()
    for _ in range(number):
        fn()
    sync()
    return timer() - start


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 7,
    min_time: float = 0.0,
    sync: Callable[[], Any] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn()`` and return seconds per call.

    warmup    calls made first and thrown away (JIT compilation, caches, lazy allocation).
    repeats   timed samples; the median resists the odd slow sample on a busy machine.
    min_time  if > 0, each sample calls fn ``number`` times in a row, with ``number`` grown
              until one sample lasts at least min_time seconds; the sample is divided by it.
              Use it for calls of a few microseconds, which the clock cannot resolve alone.
    sync      called before the clock is read each time (e.g. torch.cuda.synchronize), because
              GPU calls return before the work is done.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    sync = sync or _no_sync

    def sample(number: int) -> float:
        return _sample(fn, number, sync, timer)

    for _ in range(warmup):
        fn()
    sync()
    number = 1
    if min_time > 0:
        while True:
            elapsed = sample(number)
            if elapsed >= min_time or number >= 1 << 30:
                break
            # jump close to the target, at most x10 at a time so one outlier cannot explode it
            number = min(
                number * 10,
                max(number + 1, int(number * min_time / max(elapsed, 1e-9) * 1.2)),
            )
    return Timing.from_times([sample(number) / number for _ in range(repeats)], number)


def measure_interleaved(
    cases: dict[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    min_time: float = 0.0,
    sync: Callable[[], Any] | None = None,
    syncs: dict[str, Callable[[], Any] | None] | None = None,
) -> dict[str, Timing]:
    """Time several callables round-robin, one sample of each per round, with measure.

    A change in the machine's load during the run then hits every case alike, so the ratios between
    them hold even on a busy machine. Each case is first warmed up and its loop length calibrated
    (min_time, as in measure); every later sample runs that many calls. ``syncs`` overrides
    ``sync`` for the cases it names.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    syncs = {name: (syncs or {}).get(name, sync) for name in cases}
    numbers = {
        name: measure(fn, warmup=1, repeats=1, min_time=min_time, sync=syncs[name]).number
        for name, fn in cases.items()
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            number = numbers[name]  # the same loop that measure calibrated
            seconds = _sample(fn, number, syncs[name] or _no_sync, time.perf_counter)
            times[name].append(seconds / number)
    return {name: Timing.from_times(t, numbers[name]) for name, t in times.items()}


def gflops(flops: float, seconds: float) -> float:
    """Billions of floating-point operations per second."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


def matmul_flops(m: int, n: int, k: int) -> int:
    """An (m x k) @ (k x n) product: m*n dot products of length k, a multiply and an add each."""
    return 2 * m * n * k


def percent_of_peak(gflops_value: float, peak_gflops: float) -> float:
    return 100.0 * gflops_value / peak_gflops if peak_gflops > 0 else float("nan")


FLOAT_DTYPES = ("float64", "float32")  # what the CPU chapters compute in


def check_dtype(dtype: str, allowed: Sequence[str] = FLOAT_DTYPES) -> str:
    """dtype itself if it is one of ``allowed``, else a ValueError that lists them."""
    if dtype not in allowed:
        raise ValueError(f"dtype must be one of {', '.join(allowed)}; got {dtype!r}")
    return dtype


# --------------------------------------------------------------------------------------------
# rows: one shape for every matmul measurement and every peak


# the columns every matmul row has (matmul_row writes them; tests check them)
MATMUL_COLUMNS = (
    "kernel",
    "family",
    "n",
    "dtype",
    "threads",
    "median_s",
    "min_s",
    "max_s",
    "repeats",
    "number",
    "gflops",
)


def matmul_row(
    kernel: str,
    family: str,
    n: int,
    dtype: str,
    threads: int | None,
    timing: Timing,
    **fields: Any,
) -> dict[str, Any]:
    """An N x N @ N x N product's measurement: kernel, family, n, dtype, threads, any extra
    fields, the timing (median_s, min_s, max_s, repeats, number) and gflops at the median."""
    return {
        "kernel": kernel,
        "family": family,
        "n": n,
        "dtype": dtype,
        "threads": threads,
        **fields,
        **timing.as_row(),
        "gflops": gflops(matmul_flops(n, n, n), timing.median_s),
    }


def peak_rows(peak: dict[str, Any]) -> list[dict[str, Any]]:
    """A measured peak (machine.measure_peak) as two rows: one thread, and all threads."""
    warning = {"warning": peak["warning"]} if "warning" in peak else {}
    return [
        {
            "kernel": "fma-loop",
            "family": "peak",
            "dtype": peak["dtype"],
            "threads": 1,
            "gflops": peak["per_core_gflops"],
        },
        {
            "kernel": "fma-loop",
            "family": "peak",
            "dtype": peak["dtype"],
            "threads": peak["threads"],
            "gflops": peak["gflops"],
            "median_gflops": peak["median_gflops_all"],
            **warning,
        },
    ]


def with_percent_of_peak(
    rows: Iterable[dict[str, Any]], peaks: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Copies of rows with peak_gflops and percent_of_peak, held against the fma-loop peak row
    of the same dtype and thread count; failing that, the one-thread peak x threads.

    Rows without gflops, or whose dtype has no peak, are copied unchanged.
    """
    found = {
        (p["dtype"], p["threads"]): p["gflops"]
        for p in peaks
        if p.get("kernel") == "fma-loop"
    }
    out = []
    for row in rows:
        threads = row.get("threads") or 1
        peak = found.get((row.get("dtype"), threads))
        if peak is None and (row.get("dtype"), 1) in found:
            peak = found[(row.get("dtype"), 1)] * threads
        if peak is None or "gflops" not in row or row.get("family") == "peak":
            out.append(dict(row))
        else:
            out.append(
                {
                    **row,
                    "peak_gflops": peak,
                    "percent_of_peak": percent_of_peak(row["gflops"], peak),
                }
            )
    return out


# --------------------------------------------------------------------------------------------
# what a suite may be told


@dataclass(frozen=True)
class SuiteOptions:
    """The options of every bench suite; each suite reads the ones its docstring names.

    quick   a small, fast run (tests, CI, a first look): fewer sizes and at most 3 repeats
    sizes   the sizes to sweep (what a size is depends on the suite: N, nodes, ...)
    """

    quick: bool = False
    sizes: tuple[int, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    threads: int | None = None  # for threaded kernels and BLAS (None: all)
    repeats: int = 7  # timed repeats per measurement; the median is reported
    python_max_n: int = 128  # largest N for pure-Python kernels
    steps: int | None = None  # training steps, for the model suites

    def __post_init__(self) -> None:
        for name in ("repeats", "python_max_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("sizes", "dtypes"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.sizes is not None and any(
            not isinstance(n, int) or n < 1 for n in self.sizes
        ):
            raise ValueError(f"sizes must be positive integers, got {self.sizes!r}")

    @property
    def rounds(self) -> int:
        """Repeats to run: the asked-for count, or at most 3 when quick."""
        return min(self.repeats, 3) if self.quick else self.repeats


# --------------------------------------------------------------------------------------------
# the garbage collector


@contextlib.contextmanager
def paused_gc(pause: bool = True) -> Iterator[None]:
    """Switch off Python's cyclic garbage collector inside the block (restoring its state
    after); pause=False leaves it as it is, so callers can make pausing a choice.

    Reference counting frees cycle-free data (such as a graph of Values) without the collector;
    but the collector still wakes every 700 new objects and scans what is alive, and a training
    step allocates hundreds of thousands. Pausing it is safe for cycle-free code.
    """
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause and was_enabled:
            gc.enable()


def gc_label(paused: bool) -> str:
    """How rows name the collector's state: "enabled" (Python's default) or "paused"."""
    return "paused" if paused else "enabled"


class GCMeter:
    """Counts the cyclic garbage collector's runs inside a ``with`` block, and their seconds.

    Uses ``gc.callbacks``, which Python calls at the start and the end of every collection.
    Entered again, a meter counts on from where it stopped (a sum over several blocks).
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]  # by generation: 0 (young) .. 2 (full)
        self.seconds_by_generation = [0.0, 0.0, 0.0]
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds_by_generation[info["generation"]] += (
                time.perf_counter() - self._start
            )
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GCMeter:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self._callback)

    @property
    def total(self) -> int:
        return sum(self.collections)

    @property
    def seconds(self) -> float:
        return sum(self.seconds_by_generation)


# --------------------------------------------------------------------------------------------
# allocations


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
    blocks: (
        int  # separate pieces of memory: one per float object, per list's item array, ...
    )


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
        raise RuntimeError(
            "tracemalloc is already tracing; stop it first (traced_allocations starts its own)"
        )

    tracemalloc.start(_TRACE_DEPTH)
    try:
        # the collector stays off from the drain to the last snapshot: a collection could
        # refill a free list, or run finalizers that allocate
        with paused_gc():
            # empty the free lists: hold on to more objects of each kind than they can keep
            drain = (
                [i + 0.5 for i in range(256)],
                [[] for _ in range(256)],
                [{} for _ in range(256)],
            )
            before = tracemalloc.take_snapshot()
            result = _call(build)
            after = tracemalloc.take_snapshot()
        del result, drain
    finally:
        tracemalloc.stop()
    inside_build = [
        tracemalloc.Filter(True, __file__, lineno=_CALL_LINE, all_frames=True)
    ]
    diff = after.filter_traces(inside_build).compare_to(
        before.filter_traces(inside_build), "filename"
    )
    return Allocations(sum(d.size_diff for d in diff), sum(d.count_diff for d in diff))


def peak_allocation(fn: Callable[[], Any], repeats: int = 3) -> int:
    """The most memory (bytes) one call of fn holds at once beyond what existed before it:
    tracemalloc's peak during the call minus its count at the start, max over repeats.

    numpy reports its array buffers to tracemalloc, so a temporary array shows up here even
    though it is freed before fn returns. fn runs once untraced first (warm-up). 0 means the
    call allocated nothing that outlived a single small object.
    """
    if tracemalloc.is_tracing():
        raise RuntimeError("tracemalloc is already tracing; stop it first")
    fn()
    tracemalloc.start()
    try:
        peaks = []
        for _ in range(repeats):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            fn()
            peaks.append(tracemalloc.get_traced_memory()[1] - start)
    finally:
        tracemalloc.stop()
    return max(peaks)


def bytes_per_instance(make: Callable[[], Any], count: int = 1000) -> float:
    """Bytes each object from make() holds, from tracemalloc, averaged over count objects."""
    holder: list[Any] = [None] * count  # allocated before tracing starts, so not counted

    def fill() -> None:
        for i in range(count):
            holder[i] = make()

    return traced_allocations(fill).bytes / count


# --------------------------------------------------------------------------------------------
# result files


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside the target, flush it to disk, then rename over the
    target: readers never see half a file, and a crash mid-write leaves the old one whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes the file private; a result (or a checkpoint) is for everyone
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_result(
    suite: str,
    rows: list[dict[str, Any]],
    *,
    hardware: dict[str, Any],
    machine: str,
    command: str | None = None,
) -> dict[str, Any]:
    """A result file's content: the suite's rows with their provenance (machine.hardware_info())."""
    return {
        "schema": SCHEMA_VERSION,
        "suite": suite,
        "machine": machine,
        "command": command
        if command is not None
        else " ".join(["python -m microgpt_lib.bench", *sys.argv[1:]]),
        "hardware": hardware,
        "rows": [{"suite": suite, **row} for row in rows],
    }


def save_results(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a result as JSON (or CSV of its rows if the name ends in .csv), atomically."""
    path = Path(path)
    for key in ("suite", "hardware", "rows", "command"):
        if key not in result:
            raise ValueError(f"result is missing {key!r}; build it with make_result()")
    if path.suffix == ".csv":
        columns: list[str] = []
        for row in result["rows"]:
            columns += [c for c in row if c not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow(
                {
                    k: json.dumps(v) if isinstance(v, (list, dict)) else v
                    for k, v in row.items()
                }
            )
        atomic_write(path, buffer.getvalue())
    else:
        atomic_write(
            path,
            json.dumps(result, indent=1, sort_keys=False, default=_json_default) + "\n",
        )
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a result file")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON result file written by save_results, checking its shape."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a valid result file: {error}") from None
    missing = [
        k for k in ("schema", "suite", "hardware", "rows", "command") if k not in result
    ]
    if missing:
        raise ValueError(f"{path} is not a result file: missing {', '.join(missing)}")
    if result["schema"] not in (1, SCHEMA_VERSION):
        raise ValueError(
            f"{path} has schema {result['schema']}, this library reads 1 and "
            f"{SCHEMA_VERSION}"
        )
    if result["schema"] == 1:
        result["rows"] = upgrade_rows(result["rows"])
    return result


def upgrade_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema-1 rows as schema 2 would have written them (see SCHEMA_VERSION)."""
    out = []
    for row in rows:
        row = dict(row)
        if (
            "lesson" in row
        ):  # chapter 07: the lesson was the kind, "experiment" a part of it
            row["kind"] = row.pop("lesson")
            if "experiment" in row:
                row["part"] = row.pop("experiment")
        for old in ("measurement", "experiment"):
            if old in row:
                row["kind"] = row.pop(old)
        if row.get("gc") == "on":
            row["gc"] = "enabled"
        if "pct_of_peak" in row:
            row["percent_of_peak"] = row.pop("pct_of_peak")
        out.append(row)
    return out


def recorded_results(
    suite: str, directory: str | os.PathLike = RESULTS_DIR
) -> list[dict[str, Any]]:
    """Every recorded result of a suite in benchmarks/results/ (one per machine), by machine."""
    found = []
    for path in sorted(Path(directory).glob(f"*--{suite}.json")):
        result = load_results(path)
        if result["suite"] == suite:
            result["path"] = str(path)
            found.append(result)
    return found


def recorded_path(
    machine: str, suite: str, directory: str | os.PathLike = RESULTS_DIR
) -> Path:
    """Where --record keeps a machine's result of a suite."""
    return Path(directory) / f"{machine}--{suite}.json"


def recorded_label(result: dict[str, Any]) -> str:
    """How plots name a recorded result: its machine and the day it was recorded."""
    return f"{result['machine']}\n(recorded {result['hardware']['date'][:10]})"


def format_rows(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of rows, numbers shown to 4 significant figures."""
    rows = list(rows)
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and c not in ("suite", "times_s")]

    def cell(v: Any) -> str:
        if isinstance(
            v, (list, dict)
        ):  # a stored series (e.g. a loss curve): its length, not its values
            return f"[{len(v)} values]"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [columns] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in table)


def run_command_line(main: Callable[[], Any]) -> None:
    """Run a command-line main(); if the reader of its output goes away (``... | head``), stop
    quietly, as a Unix tool does, instead of ending in a BrokenPipeError traceback."""
    try:
        main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if (
    __name__ == "__main__"
):  # python -m microgpt_lib.bench SUITE: the command line lives in suites
    from microgpt_lib.suites import main

    run_command_line(main)
