"""This machine: what it is, how fast it can go, how many threads to use, which settings are on.

    SETTINGS, setting(name), FULL   the environment variables the course reads, declared here
    cpu_info(), cache_sizes()       CPU model, cores, SIMD flags and cache sizes, from the OS
    cache_geometry(level)           line size, sets and ways of one data cache
    blas_info(), blas_pools()       which BLAS numpy calls, and its thread pools (threadpoolctl)
    torch_info(), hardware_info()   the provenance record stored with every result
    machine_name(hardware)          a file-name-safe label: 'amd-epyc-2-cores'
    blas_threads(), limit_blas_threads(n)   BLAS threads now, and a block that sets them
    numba_threads(n), thread_counts(limit)  numba threads in a block, and a sweep's counts
    fma_kernel(parallel), measure_peak()    the multiply-add peak, one core and all cores
    fma_vector_bits(dtype)          the register width numba compiles that loop to here
    measure_scalar_peak()           one core's peak without SIMD
    measure_bandwidth()             main-memory read bandwidth: the roofline's second roof

Nothing here imports a chapter: every chapter may ask about the machine.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numba
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import bench

# --------------------------------------------------------------------------------------------
# settings: every environment variable the course reads, in one block

SETTINGS: dict[str, tuple[str, str]] = {  # name -> (default, what it does)
    "MICROGPT_FULL": ("0", "1: the bigger sweeps and longer runs (notebooks and suites)"),
    "MICROGPT_DEVICE": ("auto", "the torch device: auto, cuda, cuda:N, mps or cpu"),
    "MICROGPT_MAKEMORE": (
        "",
        "path to makemore.py: the train suite times it beside ours",
    ),
}


def setting(name: str) -> str:
    """The value of one of SETTINGS, from the environment or its default (read at each call)."""
    if name not in SETTINGS:
        raise KeyError(
            f"{name} is not a setting of the course; they are: {', '.join(SETTINGS)}"
        )
    return os.environ.get(name, "").strip() or SETTINGS[name][0]


# Notebooks and suites keep to about 90 s on 2 cores unless MICROGPT_FULL=1, read once at import:
# a kernel's environment does not change while it runs.
FULL: bool = setting("MICROGPT_FULL") == "1"


# --------------------------------------------------------------------------------------------
# the CPU and its caches


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _parse_size(text: str) -> int | None:
    """'32K' / '1024K' / '32768K' / '32 KiB' / '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B)?\s*", text or "")
    if not match:
        return None
    return (
        int(match.group(1))
        * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]
    )


_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
_SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
)
_MAC_CACHES = (
    ("L1d", "hw.perflevel0.l1dcachesize"),
    ("L2", "hw.perflevel0.l2cachesize"),
    ("L1d", "hw.l1dcachesize"),
    ("L2", "hw.l2cachesize"),
    ("L3", "hw.l3cachesize"),
)


def cpu_info() -> dict[str, Any]:
    """CPU model, core counts and cache sizes in bytes (L1d, L2, L3), read from the OS."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
    }
    caches: dict[str, int] = {}
    if sys.platform == "darwin":
        info["model"] = _sysctl("machdep.cpu.brand_string") or platform.processor()
        info["physical_cores"] = int(_sysctl("hw.physicalcpu") or 0) or None
        perf = _sysctl("hw.perflevel0.physicalcpu")
        if perf:
            info["performance_cores"] = int(perf)
        for key, name in _MAC_CACHES:
            value = _sysctl(name)
            if key not in caches and value and value.isdigit() and int(value) > 0:
                caches[key] = int(value)
    else:
        cpuinfo = _read("/proc/cpuinfo") or ""
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["model"] = (
            model.group(1).strip() if model else (platform.processor() or "unknown")
        )
        cores = {m.group(1) for m in re.finditer(r"^core id\s*:\s*(\d+)", cpuinfo, re.M)}
        sockets = {
            m.group(1) for m in re.finditer(r"^physical id\s*:\s*(\d+)", cpuinfo, re.M)
        }
        info["physical_cores"] = len(cores) * max(1, len(sockets)) if cores else None
        flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
        if flags:
            present = set(flags.group(1).split())
            info["simd"] = [f for f in _SIMD_FLAGS if f in present]
        for index in sorted(_CACHE_DIR.glob("index*")):
            level, kind, size = (_read(index / n) for n in ("level", "type", "size"))
            if level and kind in ("Data", "Unified") and size:
                caches[{"1": "L1d"}.get(level, f"L{level}")] = _parse_size(size) or 0
    try:
        affinity = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except AttributeError:
        affinity = os.cpu_count()
    info["usable_cores"] = affinity
    info["caches"] = caches
    return info


COMMON_CACHES = {"L1d": 32 * 1024, "L2": 256 * 1024, "L3": 8 * 1024 * 1024}


@functools.lru_cache(maxsize=None)
def _cache_sizes() -> tuple[tuple[str, int], ...]:
    found = cpu_info().get("caches", {})
    return tuple(
        (level, found.get(level) or size) for level, size in COMMON_CACHES.items()
    )


def cache_sizes() -> dict[str, int]:
    """L1d, L2 and L3 data-cache sizes in bytes, with common sizes where the OS says nothing."""
    return dict(_cache_sizes())


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
    names = {
        "line_bytes": "coherency_line_size",
        "sets": "number_of_sets",
        "ways": "ways_of_associativity",
    }
    for index in sorted(_CACHE_DIR.glob("index*")):
        if _read(index / "level") == str(level) and _read(index / "type") in (
            "Data",
            "Unified",
        ):
            for key, name in names.items():
                value = _read(index / name) or ""
                out[key] = int(value) if value.isdigit() else None
    return out


def cache_line_bytes() -> int:
    """The cache-line size the OS reports, 64 bytes if it does not say."""
    return cache_geometry(1)["line_bytes"] or 64


# --------------------------------------------------------------------------------------------
# BLAS, torch, and the provenance record


def blas_pools(info: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The BLAS thread pools threadpoolctl sees in this process ([] if none), or those listed in
    a blas_info() record (say, one stored with a result from another machine)."""
    pools = threadpool_info() if info is None else info.get("threadpools", [])
    return [p for p in pools if p.get("user_api") == "blas"]


def blas_info() -> dict[str, Any]:
    """Which BLAS numpy was built against, and the thread pools it runs right now."""
    out: dict[str, Any] = {"numpy": np.__version__}
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        out["blas_name"] = blas.get("name")
        out["blas_version"] = blas.get("version")
    except Exception as error:  # older numpy: no dicts mode
        out["blas_name"] = f"unknown ({type(error).__name__})"
    keys = ("user_api", "internal_api", "num_threads", "version", "architecture")
    out["threadpools"] = [{k: pool.get(k) for k in keys} for pool in threadpool_info()]
    return out


def torch_info() -> dict[str, Any]:
    """torch version and the accelerators it can see (without importing torch if it is absent)."""
    try:
        import torch
    except ImportError:
        return {"torch": None}
    mps = getattr(torch.backends, "mps", None)
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "mps": bool(mps and mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
    }
    if out["cuda"]:
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_count"] = torch.cuda.device_count()
        out["cuda_version"] = torch.version.cuda
    elif out["mps"]:
        out["gpu"] = f"Apple GPU (Metal, {platform.machine()})"
    return out


def hardware_info(include_torch: bool = True) -> dict[str, Any]:
    """The provenance record stored with every result: what ran, where, when."""
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
# threads


def blas_threads() -> int | None:
    """Threads numpy's BLAS runs now; None where threadpoolctl cannot see it (Accelerate)."""
    counts = [p["num_threads"] for p in blas_pools()]
    return max(counts) if counts else None


def limit_blas_threads(
    threads: int | None, *, strict: bool = False
) -> contextlib.AbstractContextManager:
    """A block in which numpy's BLAS runs on ``threads`` threads (None: leave it as it is).

    threadpoolctl sets OpenBLAS, MKL and BLIS threads in a running process, but cannot see
    Apple's Accelerate, which reads its count once, at load time. There the block changes
    nothing, or, with strict=True, raises RuntimeError: a measurement that must run on n threads
    then starts a fresh Python instead (blas.thread_env and blas.run_python).
    """
    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if not blas_pools():
        if strict:
            raise RuntimeError(
                "threadpoolctl cannot see numpy's BLAS, so it cannot set its threads; start "
                f"Python with the BLAS's thread variable set to {threads} (blas.thread_env)"
            )
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


@contextlib.contextmanager
def numba_threads(n: int | None) -> Iterator[int]:
    """Run numba's parallel loops on n threads inside the block (None: leave the count as it
    is, which is all the cores unless someone set it lower). Yields the count in force."""
    limit = numba.config.NUMBA_NUM_THREADS
    n = numba.get_num_threads() if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= limit:
        raise ValueError(
            f"threads must be an integer from 1 to {limit} (NUMBA_NUM_THREADS), got {n!r}"
        )
    old = numba.get_num_threads()
    if n == old:  # nothing to change (and setting it costs microseconds)
        yield old
        return
    numba.set_num_threads(int(n))
    try:
        yield int(n)
    finally:
        numba.set_num_threads(old)


def thread_counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to limit, and limit itself: the thread counts a scaling sweep visits."""
    counts = [1 << i for i in range(max(1, limit).bit_length()) if 1 << i < limit]
    return counts + [limit]


# --------------------------------------------------------------------------------------------
# the peak, measured

FMA_LANES = 256  # independent chains per thread: many vector registers' worth
FMA_DEPTH = 16  # multiply-adds per chain between a load and a store
_fma_kernels: dict[bool, Any] = {}


def fma_kernel(parallel: bool) -> Any:
    """A numba loop of independent multiply-adds (one FMA instruction each under fastmath).

    Each of 256 lanes runs ``x = x * a + b`` 16 times in registers between one load and one
    store: the lanes do not depend on each other, so the compiler vectorizes across them and
    the core keeps every FMA unit busy (were each FMA to go through memory, the loop would
    measure store bandwidth instead). With a = 1 - 1e-9 the values stay finite and never
    denormal. Each thread gets its own row of lanes.
    """
    if parallel not in _fma_kernels:

        @numba.njit(fastmath=True, parallel=parallel)
        def kernel(acc, iterations, a, b):
            for t in numba.prange(acc.shape[0]):
                row = acc[t]
                for _ in range(iterations):
                    for j in range(row.shape[0]):
                        x = row[j]
                        for _ in range(FMA_DEPTH):
                            x = x * a + b
                        row[j] = x
            return acc.sum()

        _fma_kernels[parallel] = kernel
    return _fma_kernels[parallel]


def _fma_rate(n_threads: int, dtype: str, seconds: float) -> tuple[float, float]:
    """(best, median) GFLOP/s of fma_kernel on n_threads threads."""
    kernel = fma_kernel(parallel=n_threads > 1)
    acc = np.ones((n_threads, FMA_LANES), dtype=dtype)
    a, b = acc.dtype.type(1 - 1e-9), acc.dtype.type(1e-9)
    # idle BLAS workers spin for a while after a call and would steal the cores
    with numba_threads(n_threads), limit_blas_threads(1):
        kernel(acc, 1, a, b)  # compile
        iterations = 100
        while True:  # size the loop so one call lasts about seconds / 5
            t = bench.measure(
                lambda: kernel(acc, iterations, a, b), warmup=0, repeats=1
            ).min_s
            if t >= seconds / 5 or iterations > 1 << 30:
                break
            iterations = int(iterations * max(2.0, seconds / 5 / max(t, 1e-9)))
        # short samples, many of them: the best one is the least disturbed by other programs
        timing = bench.measure(
            lambda: kernel(acc, iterations, a, b), warmup=1, repeats=10
        )
    flops = 2 * FMA_DEPTH * FMA_LANES * iterations * n_threads
    return bench.gflops(flops, timing.min_s), bench.gflops(flops, timing.median_s)


_FMA_REGISTER = re.compile(r"\bvfn?m(?:add|sub)\w*\s+%([xyz])mm")
_REGISTER_BITS = {"x": 128, "y": 256, "z": 512}


def fma_vector_bits(dtype: str = "float64") -> int | None:
    """The widest register (bits) fma_kernel's FMAs compile to in this process: xmm 128,
    ymm 256, zmm 512; None off x86, or if the machine code has no FMA to read."""
    bench.check_dtype(dtype)
    kernel = fma_kernel(parallel=False)
    acc = np.ones((1, FMA_LANES), dtype)
    kernel(acc, 1, acc.dtype.type(1), acc.dtype.type(0))  # compile for this dtype
    asm = "\n".join(
        text
        for signature, text in kernel.inspect_asm().items()
        if signature[0].dtype == numba.from_dtype(acc.dtype)
    )
    found = [_REGISTER_BITS[r] for r in _FMA_REGISTER.findall(asm)]
    return max(found) if found else None


def widest_vector_features() -> str | None:
    """NUMBA_CPU_FEATURES that make LLVM use 512-bit vectors on an AVX-512 CPU where it would
    prefer 256-bit ones (its tuning for Intel cores, whose wide instructions could lower the
    clock); None on a CPU without AVX-512."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    return features + ",-prefer-256-bit" if "+avx512f" in features.split(",") else None


def measure_peak(
    dtype: str = "float64",
    threads: int | None = None,
    seconds: float = 0.2,
    widest: bool = True,
) -> dict[str, Any]:
    """Measure this machine's peak multiply-add throughput in GFLOP/s.

    Returns {"gflops", "per_core_gflops", "threads", "dtype", "vector_bits", "source":
    "measured", ...}. The figure is the best rate a compiled loop of independent FMAs reached
    (max over repeats: for a peak, the fastest sample is the one least disturbed by the rest
    of the machine).

    widest: the loop uses the CPU's widest vectors. On Intel CPUs with AVX-512, numba's LLVM
    compiles 256-bit ones by default, half of what the hardware (and a hand-written BLAS) can
    use; then the loop runs in a fresh Python whose NUMBA_CPU_FEATURES lift that preference,
    and default_width_gflops keeps this process's one-core figure. widest=False measures the
    loop as numba compiles it here.
    """
    bench.check_dtype(dtype)
    threads = threads or numba.config.NUMBA_NUM_THREADS
    bits = fma_vector_bits(dtype)
    features = widest_vector_features() if widest and bits and bits < 512 else None
    if features and "NUMBA_CPU_FEATURES" not in os.environ:
        wide = _peak_in_child(dtype, threads, seconds, features)
        if wide is not None:
            single, _ = _fma_rate(1, dtype, seconds)
            return {
                **wide,
                "default_width_gflops": single,
                "default_vector_bits": bits,
                "method": wide["method"] + "; compiled for the widest vectors",
            }
    single, single_median = _fma_rate(1, dtype, seconds)
    everything, median = (
        (single, single_median) if threads == 1 else _fma_rate(threads, dtype, seconds)
    )
    peak = {
        "dtype": dtype,
        "source": "measured",
        "method": f"numba fastmath loop: {FMA_LANES} independent lanes x {FMA_DEPTH} FMAs "
        "per thread, best of 10",
        "per_core_gflops": single,
        "gflops": everything,
        "threads": threads,
        "median_gflops_all": median,
        "vector_bits": bits,
    }
    if everything < 0.75 * threads * single:
        peak["warning"] = (
            f"{threads} threads reached only {everything:.0f} GFLOP/s, less than "
            f"75% of {threads} x the single-core {single:.0f}: other programs were "
            "probably using the cores; re-run on a quiet machine"
        )
    return peak


def _peak_in_child(
    dtype: str, threads: int, seconds: float, features: str
) -> dict | None:
    """measure_peak in a fresh Python compiled with these CPU features (None if it fails)."""
    import json
    import tempfile

    code = (
        "import json; from microgpt_lib import machine; print(json.dumps("
        f"machine.measure_peak({dtype!r}, {threads}, {seconds}, widest=False)))"
    )
    env = {
        **os.environ,
        "NUMBA_CPU_FEATURES": features,
        # code compiled for other features must not meet this process's numba cache
        "NUMBA_CACHE_DIR": str(Path(tempfile.gettempdir()) / "microgpt-numba-widest"),
    }
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@numba.njit(fastmath={"contract"}, cache=True)
def scalar_fma_chains(iterations, a, b):
    """16 independent chains of x = x * a + b: every FMA unit busy, one number at a time."""
    x0 = x1 = x2 = x3 = x4 = x5 = x6 = x7 = 1.0
    y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = 1.0
    for _ in range(iterations):
        x0, x1, x2, x3 = x0 * a + b, x1 * a + b, x2 * a + b, x3 * a + b
        x4, x5, x6, x7 = x4 * a + b, x5 * a + b, x6 * a + b, x7 * a + b
        y0, y1, y2, y3 = y0 * a + b, y1 * a + b, y2 * a + b, y3 * a + b
        y4, y5, y6, y7 = y4 * a + b, y5 * a + b, y6 * a + b, y7 * a + b
    xs = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7
    return xs + y0 + y1 + y2 + y3 + y4 + y5 + y6 + y7


def measure_scalar_peak(seconds: float = 0.3) -> dict[str, Any]:
    """One core's float64 peak without SIMD: scalar FMAs on 16 independent chains, best of 7.

    The ceiling code that was not vectorized cannot pass. (Compiled with fastmath={"contract"}:
    FMAs allowed, nothing reordered, so the compiler has no licence to vectorize the chains.)
    """
    chains = scalar_fma_chains
    a, b = 1.0 - 1e-9, 1e-9
    chains(1, a, b)  # compile (or load numba's cache)
    iterations = max(
        1000, int(seconds / 7 * 1e9 / 16)
    )  # ~seconds / 7 per call at 1 FMA per ns
    timing = bench.measure(lambda: chains(iterations, a, b), repeats=7)
    flops = 2 * 16 * iterations
    return {
        "gflops": bench.gflops(flops, timing.min_s),
        "threads": 1,
        "source": "measured",
        "median_gflops": bench.gflops(flops, timing.median_s),
    }


@numba.njit(parallel=True, fastmath=True, cache=True)
def read_all(x):
    """The sum of x, by all threads: it reads every byte of x once and writes nothing."""
    total = 0.0
    for i in numba.prange(x.shape[0]):
        total += x[i]
    return total


def measure_bandwidth(
    megabytes: int | None = None, threads: int | None = None, repeats: int = 5
) -> dict[str, Any]:
    """Main-memory read bandwidth in GB/s: a parallel sum over an array far larger than L3.

    megabytes  the array's size (default: 8 x L3, from 256 MiB to 2 GiB, so that caches cannot
               help; a virtual machine may report its host's whole L3, hence the upper bound)
    Returns {"gbytes_per_s" (best of the repeats), "median_gbytes_per_s", "threads", "bytes"}.
    Reading only (no writes) keeps the byte count unambiguous.
    """
    if megabytes is None:
        megabytes = min(2048, max(256, 8 * (cache_sizes()["L3"] >> 20)))
    if megabytes < 1:
        raise ValueError(f"megabytes must be >= 1, got {megabytes}")
    x = np.ones(megabytes * 2**20 // 8)
    with numba_threads(threads) as n:
        timing = bench.measure(lambda: read_all(x), warmup=1, repeats=repeats)
    return {
        "gbytes_per_s": x.nbytes / timing.min_s / 1e9,
        "threads": n,
        "bytes": x.nbytes,
        "median_gbytes_per_s": x.nbytes / timing.median_s / 1e9,
        "source": "measured",
    }
