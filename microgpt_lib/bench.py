"""One timing harness for the whole course.

    measure(fn)          warm-up, repeats, median / min / max (+ GPU sync, + min-time mode)
    measure_interleaved  several functions timed round-robin, so noise hits them alike
    gflops(flops, s)     throughput; percent_of_peak(g, peak) against a *measured* peak
    measure_peak()       a compiled loop of independent fused multiply-adds, per core and all cores
    hardware_info()      the provenance record: CPU, caches, OS, Python, BLAS, numba, torch, GPU
    save_results / load_results / recorded_results   JSON (and CSV) result files

Command line:  python -m microgpt_lib.bench SUITE [--out FILE] [--record] [options]
Suites are plain functions ``suite(options) -> list[dict]`` registered in SUITES; chapters add
their own. Every row a suite returns gets the suite's name; matmul rows carry at least
suite, kernel, family, n, dtype, threads, median_s, min_s, max_s, gflops.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
SCHEMA_VERSION = 1


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
        return cls(statistics.median(times), min(times), max(times), len(times), number, list(times))

    def as_row(self) -> dict[str, float | int]:
        return {"median_s": self.median_s, "min_s": self.min_s, "max_s": self.max_s,
                "repeats": self.repeats, "number": self.number}


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
    sync = sync or (lambda: None)

    def sample(number: int) -> float:
        sync()
        start = timer()
        for _ in range(number):
            fn()
        sync()
        return timer() - start

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
            number = min(number * 10, max(number + 1, int(number * min_time / max(elapsed, 1e-9) * 1.2)))
    return Timing.from_times([sample(number) / number for _ in range(repeats)], number)


def measure_interleaved(cases: dict[str, Callable[[], Any]], *, repeats: int = 7, min_time: float = 0.0,
                        sync: Callable[[], Any] | None = None,
                        syncs: dict[str, Callable[[], Any] | None] | None = None) -> dict[str, Timing]:
    """Time several callables round-robin, one sample of each per round, with measure.

    A change in the machine's load during the run then hits every case alike, so the ratios between
    them hold even on a busy machine. Each case is first warmed up and its loop length calibrated
    (min_time, as in measure); every later sample runs that many calls. ``syncs`` overrides
    ``sync`` for the cases it names.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    syncs = {name: (syncs or {}).get(name, sync) for name in cases}
    numbers = {name: measure(fn, warmup=1, repeats=1, min_time=min_time, sync=syncs[name]).number
               for name, fn in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            number = numbers[name]
            sample = measure(lambda: [fn() for _ in range(number)], warmup=0, repeats=1, sync=syncs[name])
            times[name].append(sample.median_s / number)
    return {name: Timing.from_times(t, numbers[name]) for name, t in times.items()}


def gflops(flops: float, seconds: float) -> float:
    """Billions of floating-point operations per second."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


def matmul_flops(m: int, n: int, k: int) -> int:
    """An (m x k) @ (k x n) product: m*n dot products of length k, a multiply and an add each."""
    return 2 * m * n * k


def percent_of_peak(gflops_value: float, peak_gflops: float) -> float:
    return 100.0 * gflops_value / peak_gflops if peak_gflops > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# the machine's peak, measured


_FMA_LANES = 256  # independent chains per thread: many vector registers' worth
_FMA_DEPTH = 16  # multiply-adds per chain between a load and a store
_fma_kernels: dict[bool, Any] = {}


def _fma_kernel(parallel: bool):
    """A numba loop of independent multiply-adds (one FMA instruction each under fastmath).

    Each of 256 lanes runs ``x = x * a + b`` 16 times in registers between one load and one
    store: the lanes do not depend on each other, so the compiler vectorizes across them and
    the core keeps every FMA unit busy (were each FMA to go through memory, the loop would
    measure store bandwidth instead). With a = 1 - 1e-9 the values stay finite and never
    denormal. Each thread gets its own row of lanes.
    """
    if parallel not in _fma_kernels:
        import numba

        @numba.njit(fastmath=True, parallel=parallel)
        def kernel(acc, iterations, a, b):
            for t in numba.prange(acc.shape[0]):
                row = acc[t]
                for _ in range(iterations):
                    for j in range(row.shape[0]):
                        x = row[j]
                        for _ in range(_FMA_DEPTH):
                            x = x * a + b
                        row[j] = x
            return acc.sum()

        _fma_kernels[parallel] = kernel
    return _fma_kernels[parallel]


def measure_peak(dtype: str = "float64", threads: int | None = None, seconds: float = 0.2) -> dict[str, Any]:
    """Measure this machine's peak multiply-add throughput in GFLOP/s.

    Returns {"gflops", "per_core_gflops", "threads", "dtype", "source": "measured", ...}.
    The figure is the best rate a compiled loop of independent FMAs reached (max over repeats:
    for a peak, the fastest sample is the one least disturbed by the rest of the machine).
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    import numba
    import numpy as np

    threads = threads or numba.config.NUMBA_NUM_THREADS
    results = {}
    for label, n_threads in (("single", 1), ("all", threads)):
        kernel = _fma_kernel(parallel=n_threads > 1)
        acc = np.ones((n_threads, _FMA_LANES), dtype=dtype)
        a, b = acc.dtype.type(1 - 1e-9), acc.dtype.type(1e-9)
        # idle BLAS workers spin for a while after a call and would steal the cores
        with numba_threads(n_threads), blas_threads_limited(1):
            kernel(acc, 1, a, b)  # compile
            iterations = 100
            while True:  # size the loop so one call lasts about seconds / 5
                t = measure(lambda: kernel(acc, iterations, a, b), warmup=0, repeats=1).min_s
                if t >= seconds / 5 or iterations > 1 << 30:
                    break
                iterations = int(iterations * max(2.0, seconds / 5 / max(t, 1e-9)))
            # short samples, many of them: the best one is the least disturbed by other programs
            timing = measure(lambda: kernel(acc, iterations, a, b), warmup=1, repeats=10)
        flops = 2 * _FMA_DEPTH * _FMA_LANES * iterations * n_threads
        results[label] = {"gflops": gflops(flops, timing.min_s), "threads": n_threads,
                          "median_gflops": gflops(flops, timing.median_s)}
    peak = {
        "dtype": dtype,
        "source": "measured",
        "method": f"numba fastmath loop: {_FMA_LANES} independent lanes x {_FMA_DEPTH} FMAs per thread, best of 10",
        "per_core_gflops": results["single"]["gflops"],
        "gflops": results["all"]["gflops"],
        "threads": results["all"]["threads"],
        "median_gflops_all": results["all"]["median_gflops"],
    }
    if results["all"]["gflops"] < 0.75 * threads * results["single"]["gflops"]:
        peak["warning"] = (f"{threads} threads reached only {results['all']['gflops']:.0f} GFLOP/s, less than 75% of "
                           f"{threads} x the single-core {results['single']['gflops']:.0f}: other programs were "
                           "probably using the cores; re-run on a quiet machine")
    return peak


# --------------------------------------------------------------------------------------------
# provenance


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _parse_size(text: str) -> int | None:
    """'32K' / '1024K' / '32768K' / '32 KiB' / '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B)?\s*", text or "")
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]


def cpu_info() -> dict[str, Any]:
    """CPU model, core counts and cache sizes in bytes (L1d, L2, L3), read from the OS."""
    info: dict[str, Any] = {"machine": platform.machine(), "logical_cores": os.cpu_count()}
    caches: dict[str, int] = {}
    if sys.platform == "darwin":
        info["model"] = _sysctl("machdep.cpu.brand_string") or platform.processor()
        info["physical_cores"] = int(_sysctl("hw.physicalcpu") or 0) or None
        perf = _sysctl("hw.perflevel0.physicalcpu")
        if perf:
            info["performance_cores"] = int(perf)
        for key, name in (("L1d", "hw.perflevel0.l1dcachesize"), ("L2", "hw.perflevel0.l2cachesize"),
                          ("L1d", "hw.l1dcachesize"), ("L2", "hw.l2cachesize"), ("L3", "hw.l3cachesize")):
            value = _sysctl(name)
            if key not in caches and value and value.isdigit() and int(value) > 0:
                caches[key] = int(value)
    else:
        cpuinfo = _read("/proc/cpuinfo") or ""
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["model"] = model.group(1).strip() if model else (platform.processor() or "unknown")
        cores = {(m.group(1)) for m in re.finditer(r"^core id\s*:\s*(\d+)", cpuinfo, re.M)}
        sockets = {m.group(1) for m in re.finditer(r"^physical id\s*:\s*(\d+)", cpuinfo, re.M)}
        info["physical_cores"] = len(cores) * max(1, len(sockets)) if cores else None
        flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
        if flags:
            present = set(flags.group(1).split())
            info["simd"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16") if f in present]
        base = Path("/sys/devices/system/cpu/cpu0/cache")
        for index in sorted(base.glob("index*")):
            level, kind, size = (_read(str(index / n)) for n in ("level", "type", "size"))
            if level and kind in ("Data", "Unified") and size:
                caches[{"1": "L1d"}.get(level, f"L{level}")] = _parse_size(size) or 0
    try:
        affinity = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except AttributeError:
        affinity = os.cpu_count()
    info["usable_cores"] = affinity
    info["caches"] = caches
    return info


def cache_geometry(level: int = 1) -> dict[str, int | None]:
    """Line size, number of sets and ways of a data cache, from the OS (None where it won't say).

    A cache of `sets` x `ways` lines of `line_bytes` each keeps any address in just one set:
    the one picked by the address bits just above the line offset.
    """
    out: dict[str, int | None] = {"line_bytes": None, "sets": None, "ways": None}
    if sys.platform == "darwin":
        line = _sysctl("hw.cachelinesize")
        out["line_bytes"] = int(line) if line and line.isdigit() else None
        return out
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        read = {name: _read(str(index / name)) for name in
                ("level", "type", "coherency_line_size", "number_of_sets", "ways_of_associativity")}
        if read["level"] == str(level) and read["type"] in ("Data", "Unified"):
            for key, name in (("line_bytes", "coherency_line_size"), ("sets", "number_of_sets"),
                              ("ways", "ways_of_associativity")):
                out[key] = int(read[name]) if (read[name] or "").isdigit() else None
    return out


def blas_info() -> dict[str, Any]:
    """Which BLAS numpy was built against, and the thread pools it runs right now."""
    import numpy as np

    out: dict[str, Any] = {"numpy": np.__version__}
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        out["blas_name"] = blas.get("name")
        out["blas_version"] = blas.get("version")
    except Exception as error:  # older numpy: no dicts mode
        out["blas_name"] = f"unknown ({type(error).__name__})"
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = [
            {k: pool.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "architecture")}
            for pool in threadpool_info()
        ]
    except ImportError:
        out["threadpools"] = []
    return out


def torch_info() -> dict[str, Any]:
    """torch version and the accelerators it can see (without importing torch if it is absent)."""
    try:
        import torch
    except ImportError:
        return {"torch": None}
    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                           "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
                           "cpu_threads": torch.get_num_threads()}
    if out["cuda"]:
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_count"] = torch.cuda.device_count()
        out["cuda_version"] = torch.version.cuda
    elif out["mps"]:
        out["gpu"] = f"Apple GPU (Metal, {platform.machine()})"
    return out


def hardware_info(include_torch: bool = True) -> dict[str, Any]:
    """The provenance record stored with every result: what ran, where, when."""
    import numba

    record: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "blas": blas_info(),
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
    }
    if include_torch:
        record.update(torch_info())
    return record


def machine_name(hardware: dict[str, Any]) -> str:
    """A file-name-safe label for a machine, e.g. 'amd-epyc-2-cores' or 'apple-m4-max-16-cores'."""
    model = hardware.get("cpu", {}).get("model") or "unknown-cpu"
    model = re.sub(r"\((r|tm)\)|cpu|processor|@.*", "", model, flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    name = f"{slug}-{hardware.get('cpu', {}).get('logical_cores')}-cores"
    if hardware.get("gpu"):
        name += "-" + re.sub(r"[^a-z0-9]+", "-", str(hardware["gpu"]).lower()).strip("-")
    return name


# --------------------------------------------------------------------------------------------
# result files


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file beside the target, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a result is for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_result(suite: str, rows: list[dict[str, Any]], *, command: str | None = None,
                hardware: dict[str, Any] | None = None, machine: str | None = None) -> dict[str, Any]:
    hardware = hardware or hardware_info()
    return {
        "schema": SCHEMA_VERSION,
        "suite": suite,
        "machine": machine or machine_name(hardware),
        "command": command if command is not None else " ".join(["python -m microgpt_lib.bench", *sys.argv[1:]]),
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
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
        _atomic_write(path, buffer.getvalue())
    else:
        _atomic_write(path, json.dumps(result, indent=1, sort_keys=False, default=_json_default) + "\n")
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
    missing = [k for k in ("schema", "suite", "hardware", "rows", "command") if k not in result]
    if missing:
        raise ValueError(f"{path} is not a result file: missing {', '.join(missing)}")
    if result["schema"] != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema {result['schema']}, this library reads {SCHEMA_VERSION}")
    return result


def recorded_results(suite: str, directory: str | os.PathLike = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every recorded result of a suite in benchmarks/results/ (one per machine), sorted by machine."""
    found = []
    for path in sorted(Path(directory).glob(f"*--{suite}.json")):
        result = load_results(path)
        if result["suite"] == suite:
            result["path"] = str(path)
            found.append(result)
    return found


def recorded_path(machine: str, suite: str, directory: str | os.PathLike = RESULTS_DIR) -> Path:
    return Path(directory) / f"{machine}--{suite}.json"


# --------------------------------------------------------------------------------------------
# suites and the command line


def suite_peak(options: argparse.Namespace) -> list[dict[str, Any]]:
    """The machine's measured FMA peak, FP64 and FP32, one thread and all threads."""
    rows = []
    for dtype in options.dtypes or ["float64", "float32"]:
        peak = measure_peak(dtype, threads=options.threads)
        if "warning" in peak:
            print("warning:", peak["warning"], file=sys.stderr)
        rows.append({"kernel": "fma-loop", "family": "peak", "dtype": dtype, "threads": 1,
                     "gflops": peak["per_core_gflops"]})
        rows.append({"kernel": "fma-loop", "family": "peak", "dtype": dtype, "threads": peak["threads"],
                     "gflops": peak["gflops"], "median_gflops": peak["median_gflops_all"],
                     **({"warning": peak["warning"]} if "warning" in peak else {})})
    return rows


def naive_matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """C = A @ B with three Python loops (i, j, k): the slow, obvious reference."""
    n, k, m = len(a), len(b), len(b[0])
    if any(len(row) != k for row in a):
        raise ValueError(f"shapes do not match: A rows must have {k} columns (B has {k} rows)")
    c = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            total = 0.0
            for p in range(k):
                total += a[i][p] * b[p][j]
            c[i][j] = total
    return c


def suite_matmul_intro(options: argparse.Namespace) -> list[dict[str, Any]]:
    """A first matmul ladder: pure Python triple loop vs numpy (BLAS), float64."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for n in options.sizes or [16, 32, 64, 128]:
        a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
        al, bl = a.tolist(), b.tolist()
        flops = matmul_flops(n, n, n)
        for kernel, family, fn, reps in (("python-ijk", "python", lambda: naive_matmul(al, bl), 3),
                                         ("numpy", "blas", lambda: a @ b, options.repeats)):
            if family == "python" and n > options.python_max_n:
                continue
            t = measure(fn, warmup=1, repeats=reps, min_time=0.01 if family == "blas" else 0.0)
            rows.append({"kernel": kernel, "family": family, "n": n, "dtype": "float64",
                         "threads": blas_threads() if family == "blas" else 1,
                         **t.as_row(), "gflops": gflops(flops, t.median_s)})
    return rows


def blas_threads_limited(threads: int | None):
    """A context manager limiting numpy's BLAS to ``threads`` threads.

    None leaves the count as it is; without threadpoolctl (or where it cannot see the BLAS, as
    with Apple's Accelerate) it changes nothing: see microgpt_lib.blas for that case.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


@contextlib.contextmanager
def numba_threads(n: int | None) -> Iterator[int]:
    """Run numba's parallel loops on n threads inside the block (None: leave the count as it is,
    which is all the cores unless someone set it lower)."""
    import numba
    import numpy as np

    limit = numba.config.NUMBA_NUM_THREADS
    n = numba.get_num_threads() if n is None else n
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit} (NUMBA_NUM_THREADS), got {n!r}")
    old = numba.get_num_threads()
    if n == old:  # nothing to change (and setting it costs microseconds)
        yield old
        return
    numba.set_num_threads(int(n))
    try:
        yield int(n)
    finally:
        numba.set_num_threads(old)


def blas_threads() -> int | None:
    """Threads numpy's BLAS runs now, or None where threadpoolctl cannot see it (Apple Accelerate)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None



# name -> a suite function, or "module:function" imported only when that suite runs
SUITES: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]] | str] = {
    "peak": suite_peak,
    "matmul-intro": suite_matmul_intro,
    "matmul": "microgpt_lib.kernels:suite_matmul",
    "autograd": "microgpt_lib.autograd_lab:suite_autograd",
    "scalar-gpt": "microgpt_lib.scalar_gpt:suite_scalar_gpt",
    "layout": "microgpt_lib.layout:suite_layout",
    "blas": "microgpt_lib.blas:suite_blas",
    "gpu": "microgpt_lib.device:suite_gpu",
}


def resolve_suite(name: str) -> Callable[[argparse.Namespace], list[dict[str, Any]]]:
    if name not in SUITES:
        raise SystemExit(f"unknown suite {name!r}; the suites are: {', '.join(sorted(SUITES))}")
    target = SUITES[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m microgpt_lib.bench",
                                     description="Run a benchmark suite and write its results.")
    parser.add_argument("suite", help="one of: " + ", ".join(sorted(SUITES)))
    parser.add_argument("--out", help="write results here (.json, or .csv for the rows alone)")
    parser.add_argument("--record", action="store_true",
                        help=f"also write {RESULTS_DIR.name}/<machine>--<suite>.json for this machine")
    parser.add_argument("--machine", help="machine label for --record (default: derived from the CPU/GPU)")
    parser.add_argument("--sizes", type=int, nargs="+", help="matrix sizes N")
    parser.add_argument("--dtypes", "--dtype", nargs="+", choices=["float64", "float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="thread count for threaded kernels (default: all)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median reported)")
    parser.add_argument("--python-max-n", type=int, default=128, help="largest N for pure-Python kernels")
    parser.add_argument("--steps", type=int, help="training steps for model suites")
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (for tests and CI)")
    return parser


def format_rows(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of rows, numbers shown to 4 significant figures."""
    rows = list(rows)
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and c not in ("suite", "times_s")]

    def cell(v: Any) -> str:
        if isinstance(v, (list, dict)):  # a stored series (e.g. a loss curve): its length, not its values
            return f"[{len(v)} values]"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [columns] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = build_parser().parse_args(argv)
    suite = resolve_suite(options.suite)
    if options.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    rows = suite(options)
    command = " ".join(["python -m microgpt_lib.bench", *(sys.argv[1:] if argv is None else argv)])
    result = make_result(options.suite, rows, command=command, machine=options.machine)
    print(format_rows(result["rows"]))
    if options.out:
        print(f"wrote {save_results(result, options.out)}")
    if options.record:
        print(f"recorded {save_results(result, recorded_path(result['machine'], options.suite))}")
    return result


if __name__ == "__main__":
    main()
