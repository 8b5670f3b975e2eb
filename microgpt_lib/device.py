"""Devices for torch: CUDA, Apple's MPS or the CPU, behind one small API, and chapter 07's lessons.

    pick_device(name=None)      CUDA, then MPS, then CPU; or the one asked for (argument, else the
                                environment variable MICROGPT_DEVICE); a clear error if it is absent
    available_devices()         the device kinds this torch can use on this machine
    synchronize(device)         wait for queued work: GPU calls return before the work is done
    sync_for(device)            the sync callable for bench.measure (None on the CPU)
    memory_stats(device)        bytes held by torch's caching allocator (CUDA, MPS; {} on the CPU)
    empty_cache(device)         hand cached blocks back to the driver
    supported_dtypes(device)    the dtypes a device computes in (MPS: no float64)
    torch_dtype(name, device)   'bfloat16' -> torch.bfloat16, checked against the device
    supports_tf32(device)       CUDA compute capability >= 8.0 (Ampere and later)
    tf32_matmul()               context manager: float32 matmuls run on TF32 tensor cores
    describe(device)            name, memory, capability: the provenance of a GPU result

The lessons, one function each, measured on any device and gathered by suite_gpu (`gpu` suite):
    transfer_rows      host <-> device copies, pageable vs pinned memory     (GPUs only)
    resident_rows      data kept on the device vs copied every step; .item() every step
    sync_rows          timing without synchronising (wrong) vs with it (right), and events
    launch_rows        the fixed cost per op, and what amortises it (batching, CUDA graphs, compile)
    crossover_rows     numpy's CPU BLAS vs torch on the device, by matrix size
    precision_rows     float32 vs TF32 / bfloat16 / float16: speed and accuracy
    memory_rows        the caching allocator: allocated vs reserved, cached vs fresh allocations
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from . import bench

DEVICE_ENV = "MICROGPT_DEVICE"
PREFERENCE = ("cuda", "mps", "cpu")  # pick_device's order when nothing is asked for
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 1 << 20


class DeviceUnavailableError(RuntimeError):
    """A device was asked for (argument or MICROGPT_DEVICE) that this machine or torch build lacks."""


# --------------------------------------------------------------------------------------------
# choosing a device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def is_available(kind: str) -> bool:
    """Whether torch can compute on a device kind ('cuda', 'mps' or 'cpu') here."""
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return _mps_available()
    if kind == "cpu":
        return True
    raise ValueError(f"device kind must be one of {', '.join(PREFERENCE)}; got {kind!r}")


def available_devices() -> list[str]:
    """Device kinds usable here, best first: e.g. ['cuda', 'cpu'] or ['mps', 'cpu'] or ['cpu']."""
    return [kind for kind in PREFERENCE if is_available(kind)]


def why_unavailable(kind: str) -> str:
    """A sentence saying why a device kind cannot be used here, and what would fix it."""
    if kind == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            return (f"this torch ({torch.__version__}) was built without CUDA; install a CUDA build "
                    "(see https://pytorch.org/get-started/locally/) on a machine with an NVIDIA GPU")
        return (f"torch was built with CUDA {torch.version.cuda} but finds no GPU "
                "(no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides every GPU)")
    if kind == "mps":
        if sys.platform != "darwin":
            return "MPS is Apple's Metal backend and exists only on macOS"
        if not torch.backends.mps.is_built():
            return f"this torch ({torch.__version__}) was built without MPS"
        return "MPS needs macOS 12.3 or later on a Mac with a Metal GPU (Apple silicon)"
    return f"{kind!r} is not a device kind this library uses ({', '.join(PREFERENCE)})"


def parse_device(name: str | torch.device) -> torch.device:
    """'cuda', 'cuda:1', 'mps', 'cpu' (or a torch.device) -> torch.device, checking the kind."""
    if isinstance(name, torch.device):
        device = name
    elif isinstance(name, str):
        try:
            device = torch.device(name.strip().lower())
        except RuntimeError:
            device = None
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(name).__name__}")
    if device is None or device.type not in PREFERENCE:
        raise ValueError(f"device must be 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'; got {name!r}")
    return device


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """The device to compute on.

    name None: the environment variable MICROGPT_DEVICE if set, else 'auto'.
    'auto': the best available, in the order CUDA, MPS, CPU.
    Anything else ('cuda', 'cuda:1', 'mps', 'cpu') must be available, or DeviceUnavailableError
    says why: a GPU asked for is never silently replaced by the CPU.
    """
    source = "the argument"
    if name is None:
        name = os.environ.get(DEVICE_ENV, "").strip() or "auto"
        source = f"the environment variable {DEVICE_ENV}"
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device(available_devices()[0])
    device = parse_device(name)
    if not is_available(device.type):
        raise DeviceUnavailableError(
            f"{source} asks for device {str(name)!r}, but {why_unavailable(device.type)}. "
            f"Available here: {', '.join(available_devices())}. Use 'auto' (or unset {DEVICE_ENV}) "
            "to take the best available one.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"{source} asks for {str(device)!r}, but torch sees only "
                                     f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)")
    return device


# --------------------------------------------------------------------------------------------
# synchronising, memory


def synchronize(device: str | torch.device) -> None:
    """Block until every queued op on the device has finished (a no-op on the CPU)."""
    device = parse_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def sync_for(device: str | torch.device) -> Callable[[], None] | None:
    """What bench.measure(sync=...) needs for this device: None on the CPU (ops are synchronous)."""
    device = parse_device(device)
    return None if device.type == "cpu" else functools.partial(synchronize, device)


def tracks_memory(device: str | torch.device) -> bool:
    """Whether torch keeps allocator statistics for the device (CUDA and MPS do, the CPU does not)."""
    return parse_device(device).type in ("cuda", "mps")


def memory_stats(device: str | torch.device) -> dict[str, int]:
    """Bytes in use on the device, from torch's caching allocator.

    allocated   held by live tensors
    reserved    held by the allocator: live tensors + cached free blocks (MPS: all the process's
                Metal memory, including MPSGraph's own)
    CUDA adds peak_allocated, free and total (the whole GPU); MPS adds recommended_max.
    The CPU has no such allocator: {} (ask the operating system instead).
    """
    device = parse_device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
                "peak_allocated": torch.cuda.max_memory_allocated(device), "free": free, "total": total}
    if device.type == "mps":
        return {"allocated": torch.mps.current_allocated_memory(), "reserved": torch.mps.driver_allocated_memory(),
                "recommended_max": torch.mps.recommended_max_memory()}
    return {}


def empty_cache(device: str | torch.device) -> None:
    """Return the allocator's cached free blocks to the driver (a no-op on the CPU)."""
    device = parse_device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


# --------------------------------------------------------------------------------------------
# dtypes


def supported_dtypes(device: str | torch.device) -> list[str]:
    """The floating dtypes a device computes in, widest first.

    CPU: all four. CUDA: all, bfloat16 where torch.cuda.is_bf16_supported() (Ampere and later run
    it natively). MPS: no float64 at all (Metal has no 64-bit floats); bfloat16 from macOS 14.
    """
    device = parse_device(device)
    if device.type == "cpu":
        return list(DTYPES)
    if device.type == "cuda":
        return ["float64", "float32"] + (["bfloat16"] if torch.cuda.is_bf16_supported() else []) + ["float16"]
    macos_14 = getattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)(14, 0)
    return ["float32"] + (["bfloat16"] if macos_14 else []) + ["float16"]


def torch_dtype(name: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """'float32' -> torch.float32, raising TypeError if the device cannot compute in it."""
    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    device = parse_device(device)
    supported = supported_dtypes(device)
    if name not in supported:
        why = " (Apple's Metal GPUs have no 64-bit floats)" if device.type == "mps" and name == "float64" else ""
        raise TypeError(f"{name} is not supported on {device.type}{why}; it supports {', '.join(supported)}")
    return DTYPES[name]


def supports_tf32(device: str | torch.device) -> bool:
    """TF32 tensor cores: NVIDIA GPUs of compute capability 8.0 (Ampere) and later."""
    device = parse_device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


@contextlib.contextmanager
def tf32_matmul() -> Iterator[None]:
    """Inside the block, CUDA float32 matmuls may round their inputs to TF32 (10-bit mantissa).

    Uses torch's per-backend setting (torch >= 2.9) and restores the previous value. torch refuses
    to mix it with the older set_float32_matmul_precision / allow_tf32 flags, so older torch
    versions, and programs that already set the old flags, get allow_tf32 instead.
    """
    matmul = torch.backends.cuda.matmul
    try:
        previous, attribute, value = matmul.fp32_precision, "fp32_precision", "tf32"
    except (AttributeError, RuntimeError):  # older torch, or the program already used the old flags
        previous, attribute, value = matmul.allow_tf32, "allow_tf32", True
    setattr(matmul, attribute, value)
    try:
        yield
    finally:
        setattr(matmul, attribute, previous)


def describe(device: str | torch.device) -> dict[str, Any]:
    """What a GPU result needs for provenance: the device's name, memory, capability, versions."""
    device = parse_device(device)
    info: dict[str, Any] = {"device": str(device), "kind": device.type, "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, total_memory=props.total_memory, capability=".".join(map(str, (props.major, props.minor))),
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda)
    elif device.type == "mps":
        import platform

        info.update(name=f"Apple GPU (MPS, {bench.cpu_info().get('model')})", macos=platform.mac_ver()[0],
                    recommended_max_memory=torch.mps.recommended_max_memory())
    else:
        info.update(name=bench.cpu_info().get("model"), threads=torch.get_num_threads())
    return info


# --------------------------------------------------------------------------------------------
# the lessons, measured


def _matrices(n: int, dtype: str, device: torch.device, count: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Random N x N matrices drawn on the CPU in float32 (same numbers on every device), then moved."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype(dtype, device))
            for _ in range(count)]


def _row(device: torch.device, lesson: str, timing: bench.Timing | None = None, **fields: Any) -> dict[str, Any]:
    return {"lesson": lesson, "device": device.type, **fields, **(timing.as_row() if timing else {})}


def _matmul_row(device: torch.device, lesson: str, kernel: str, n: int, dtype: str, timing: bench.Timing,
                **fields: Any) -> dict[str, Any]:
    family = "blas" if kernel.startswith("numpy") else ("torch-cpu" if device.type == "cpu" else "gpu")
    threads = torch.get_num_threads() if family == "torch-cpu" else None
    return _row(device, lesson, timing, kernel=kernel, family=family, n=n, dtype=dtype, threads=threads, **fields,
                gflops=bench.gflops(bench.matmul_flops(n, n, n), timing.median_s))


def transfer_rows(device: torch.device, sizes_mib: Sequence[int] = (1, 16, 64), repeats: int = 7) -> list[dict[str, Any]]:
    """Host <-> device copy time and bandwidth, from pageable and (CUDA) pinned host memory.

    Pinned (page-locked) memory lets the GPU's copy engine read host RAM directly, skipping a
    staging copy, and allows non_blocking copies that overlap compute. On the CPU there is no
    copy to measure (``x.to('cpu') is x``): returns [].
    """
    if device.type == "cpu":
        return []
    sync, rows = sync_for(device), []
    for mib in sizes_mib:
        host, host_out = torch.randn(mib * MIB // 4), torch.empty(mib * MIB // 4)
        on_device = host.to(device)
        # device-to-host copies into buffers allocated once, so pageable vs pinned is all that differs
        cases = [("host-to-device", "pageable", lambda: host.to(device)),
                 ("device-to-host", "pageable", lambda: host_out.copy_(on_device))]
        if device.type == "cuda":  # MPS shares memory with the CPU: pinning does not apply
            pinned_host, pinned_out = host.pin_memory(), torch.empty(host.numel(), pin_memory=True)
            cases += [("host-to-device", "pinned", lambda: pinned_host.to(device, non_blocking=True)),
                      ("device-to-host", "pinned", lambda: pinned_out.copy_(on_device, non_blocking=True))]
        for direction, memory, fn in cases:
            t = bench.measure(fn, warmup=2, repeats=repeats, sync=sync)
            rows.append(_row(device, "transfer", t, direction=direction, memory=memory, bytes=host.numel() * 4,
                             gb_per_s=host.numel() * 4 / t.median_s / 1e9))
    return rows


def _mlp_step(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """A stand-in training step's forward: two matmuls, a ReLU and a mean."""
    return (torch.relu(x @ w1) @ w2).square().mean()


def resident_rows(device: torch.device, batch: int = 1024, width: int = 256, steps: int = 20,
                  repeats: int = 5) -> list[dict[str, Any]]:
    """Seconds per step of a small MLP forward, ``steps`` steps in a row, three ways:

    resident          the batch lives on the device; the CPU queues step after step
    item every step   the same, but reads loss.item() each step: the CPU waits for the GPU each time
    copy every step   the batch is copied from host memory to the device at the start of every step
    """
    x_host = torch.randn(batch, width)
    x = x_host.to(device)
    w1, w2 = (torch.randn(width, width, device=device) / width**0.5 for _ in range(2))
    cases = {
        "resident": lambda: [_mlp_step(x, w1, w2) for _ in range(steps)],
        "item every step": lambda: [_mlp_step(x, w1, w2).item() for _ in range(steps)],
        "copy every step": lambda: [_mlp_step(x_host.to(device), w1, w2) for _ in range(steps)],
    }
    timings = bench.measure_interleaved(cases, repeats=repeats, sync=sync_for(device))
    return [_row(device, "resident", t, mode=mode, batch=batch, width=width, steps=steps,
                 step_s=t.median_s / steps, bytes_per_step=x_host.numel() * 4) for mode, t in timings.items()]


def event_timing(fn: Callable[[], Any], device: torch.device, repeats: int = 7) -> bench.Timing:
    """Time fn with device events (CUDA, MPS): recorded in the GPU's queue, read after it drains."""
    events = torch.cuda.Event if device.type == "cuda" else torch.mps.Event
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start, end = events(enable_timing=True), events(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)  # milliseconds -> seconds
    return bench.Timing.from_times(times)


def sync_rows(device: torch.device, n: int = 2048, dtype: str = "float32", repeats: int = 7) -> list[dict[str, Any]]:
    """The same matmul timed three ways: no synchronisation (wrong on a GPU: it times the launch
    only), synchronising before each clock read (right), and device events (right, GPU only)."""
    a, b = _matrices(n, dtype, device)
    # one sample of each in turn; the right one synchronises before its clock starts, so the queue
    # the wrong one left behind is drained outside the timed region
    timings = bench.measure_interleaved({"no sync (wrong)": lambda: a @ b, "synchronize": lambda: a @ b}, repeats=repeats,
                                  syncs={"no sync (wrong)": None, "synchronize": sync_for(device)})
    synchronize(device)
    rows = [_matmul_row(device, "sync", f"torch-{device.type}", n, dtype, t, method=method) for method, t in timings.items()]
    if device.type != "cpu":
        rows.append(_matmul_row(device, "sync", f"torch-{device.type}", n, dtype, event_timing(lambda: a @ b, device, repeats),
                                method="events"))
    return rows


def layer_chain(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x = tanh(x @ w)`` for each w: two small ops per layer, a microgpt-sized stack of launches."""
    for w in weights:
        x = torch.tanh(x @ w)
    return x


def _cuda_graph(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Capture fn's kernels into a CUDA graph once; the returned callable replays them in one launch.

    The warm-up runs on a side stream (as torch's CUDA-graph notes require) so lazy initialisation
    (cuBLAS handles, allocator blocks) happens before capture. Inputs must stay at the same address.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):  # capture on the warmed-up stream
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def launch_rows(device: torch.device, numels: Sequence[int] = (1, 1_000, 100_000, 10_000_000), width: int = 16,
                layers: int = 8, batch: int = 64, repeats: int = 7, compile: bool = False) -> list[dict[str, Any]]:
    """The fixed cost of an op, and what amortises it.

    op size       one ``torch.add(x, 1, out=y)`` by tensor size: flat (launch overhead) until the
                  data is big enough for memory bandwidth to matter
    chain         ``layers`` x (matmul + tanh) on width x width matrices (2*layers ops), run
                  eagerly; on a stack of ``batch`` inputs in one call each op (batching); replayed
                  as one CUDA graph (CUDA); torch.compile'd (only if compile=True: seconds to minutes
                  of compiling, and it needs a C compiler on the CPU)
    """
    sync, rows = sync_for(device), []
    for numel in numels:
        x, out = torch.zeros(numel, device=device), torch.empty(numel, device=device)
        t = bench.measure(lambda: torch.add(x, 1, out=out), warmup=2, repeats=repeats, min_time=0.02, sync=sync)
        rows.append(_row(device, "launch", t, experiment="op size", op="add", numel=numel,
                         gb_per_s=2 * 4 * numel / t.median_s / 1e9))  # reads x, writes out

    generator = torch.Generator().manual_seed(0)
    weights = [(torch.randn(width, width, generator=generator) / width**0.5).to(device) for _ in range(layers)]
    x_one = torch.randn(width, width, generator=generator).to(device)
    x_many = torch.randn(batch, width, width, generator=generator).to(device)
    cases: dict[str, Callable[[], Any]] = {
        "eager": lambda: layer_chain(x_one, weights),
        f"eager, batch of {batch}": lambda: layer_chain(x_many, weights),
    }
    if device.type == "cuda":
        cases["cuda graph"] = _cuda_graph(lambda: layer_chain(x_one, weights))
    compile_s = {}
    if compile:
        mode = "reduce-overhead" if device.type == "cuda" else "default"  # reduce-overhead = CUDA graphs
        method = f"torch.compile ({mode})"
        compiled = torch.compile(layer_chain, mode=mode)
        start = time.perf_counter()
        try:
            for _ in range(3):  # reduce-overhead records its CUDA graph on a later call than the first
                compiled(x_one, weights)
            synchronize(device)
        except Exception as error:  # e.g. no C++ compiler, or a backend torch.compile does not support yet
            rows.append(_row(device, "launch", None, experiment="chain", method=method, ops=2 * layers, batch=1,
                             width=width, error=f"{type(error).__name__}: {error}"[:300]))
        else:
            compile_s[method] = time.perf_counter() - start
            cases[method] = lambda: compiled(x_one, weights)
    timings = bench.measure_interleaved(cases, repeats=repeats, min_time=0.02, sync=sync)
    for method, t in timings.items():
        samples = batch if method.startswith("eager, batch") else 1
        extra = {"compile_s": compile_s[method]} if method in compile_s else {}
        rows.append(_row(device, "launch", t, experiment="chain", method=method, ops=2 * layers, batch=samples,
                         width=width, per_op_s=t.median_s / (2 * layers), per_sample_s=t.median_s / samples, **extra))
    return rows


def crossover_rows(device: torch.device, sizes: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
                   dtype: str = "float32", repeats: int = 7) -> list[dict[str, Any]]:
    """numpy (the CPU's BLAS) vs torch on ``device`` for N x N matmuls, by N.

    On a GPU also "with copies": inputs copied to the device and the result back, each call —
    the cost of a one-off product on data that lives on the host. Grouped by backend, so the CPU
    BLAS's spinning worker threads do not run into torch's.
    """
    rng = np.random.default_rng(0)
    host = {n: (rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)) for n in sizes}
    sync, kernel, rows = sync_for(device), f"torch-{device.type}", []
    for n, (a, b) in host.items():
        t = bench.measure(lambda: a @ b, warmup=1, repeats=repeats, min_time=0.02)
        rows.append(_matmul_row(device, "crossover", "numpy", n, dtype, t))
    for n, (a, b) in host.items():
        ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        t = bench.measure(lambda: ta @ tb, warmup=2, repeats=repeats, min_time=0.02, sync=sync)
        rows.append(_matmul_row(device, "crossover", kernel, n, dtype, t))
        if device.type != "cpu":
            t = bench.measure(lambda: (torch.from_numpy(a).to(device) @ torch.from_numpy(b).to(device)).cpu(),
                              warmup=2, repeats=repeats, min_time=0.02, sync=sync)
            rows.append(_matmul_row(device, "crossover", kernel + " with copies", n, dtype, t))
    return rows


def crossover_size(rows: Sequence[dict[str, Any]], fast: str, slow: str = "numpy") -> int | None:
    """The smallest N from which kernel ``fast`` beats kernel ``slow`` at every measured larger N."""
    def by_n(kernel: str) -> dict[int, float]:
        return {r["n"]: r["median_s"] for r in rows if r.get("kernel") == kernel}

    fast_s, slow_s = by_n(fast), by_n(slow)
    common = sorted(set(fast_s) & set(slow_s))
    answer = None
    for n in reversed(common):
        if fast_s[n] >= slow_s[n]:
            break
        answer = n
    return answer


def precision_modes(device: torch.device) -> list[str]:
    """float32, then the faster, less precise ways a device can multiply: tf32, bfloat16, float16."""
    return (["float32"] + (["tf32"] if supports_tf32(device) else [])
            + [d for d in ("bfloat16", "float16") if d in supported_dtypes(device)])


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """||result - reference|| / ||reference|| (Frobenius), computed in float64 on the CPU."""
    result, reference = result.detach().to("cpu", torch.float64), reference.detach().to("cpu", torch.float64)
    return float(torch.linalg.norm(result - reference) / torch.linalg.norm(reference))


def precision_rows(device: torch.device, sizes: Sequence[int] = (512,), modes: Sequence[str] | None = None,
                   repeats: int = 7, max_reference_n: int = 2048) -> list[dict[str, Any]]:
    """Speed and accuracy of an N x N matmul in each precision mode.

    The inputs are the same float32 matrices for every mode (rounded to bfloat16/float16 where
    that is the mode: part of the real cost); the reference is their product in float64 (on the
    device if it has float64, else on the CPU up to max_reference_n). 'tf32' keeps float32 tensors
    and lets CUDA tensor cores round the inputs to a 10-bit mantissa inside the matmul.
    """
    modes = list(modes or precision_modes(device))
    available = precision_modes(device) + (["float64"] if "float64" in supported_dtypes(device) else [])
    missing = [m for m in modes if m not in available]
    if missing:
        raise ValueError(f"precision modes {', '.join(missing)} are not available on {device.type}; "
                         f"it has {', '.join(available)}")
    sync, rows = sync_for(device), []
    for n in sizes:
        a32, b32 = _matrices(n, "float32", device)
        reference = None
        if "float64" in supported_dtypes(device):
            reference = a32.double() @ b32.double()
        elif n <= max_reference_n:
            reference = a32.cpu().double() @ b32.cpu().double()
        for mode in modes:
            dtype = "float32" if mode == "tf32" else mode
            a, b = a32.to(DTYPES[dtype]), b32.to(DTYPES[dtype])
            with tf32_matmul() if mode == "tf32" else contextlib.nullcontext():
                t = bench.measure(lambda: a @ b, warmup=2, repeats=repeats, min_time=0.02, sync=sync)
                error = relative_error(a @ b, reference) if reference is not None else None
            rows.append(_matmul_row(device, "precision", f"torch-{device.type}", n, dtype, t, mode=mode,
                                    relative_error=error, epsilon=2.0**-10 if mode == "tf32" else torch.finfo(DTYPES[dtype]).eps))
    return rows


def memory_rows(device: torch.device, mib: int = 256, repeats: int = 5) -> list[dict[str, Any]]:
    """The caching allocator, step by step (GPUs only; the CPU has none: returns []).

    Allocated memory drops when a tensor is freed, reserved memory does not: the block stays cached
    for the next allocation of that size, which is then much faster than asking the driver. After
    empty_cache() the block goes back to the driver. Then: the time of a cached vs a fresh allocation.
    """
    if not tracks_memory(device):
        return []
    numel, rows = mib * MIB // 4, []

    def stage(name: str) -> None:
        synchronize(device)
        stats = memory_stats(device)
        rows.append(_row(device, "memory", None, experiment="stages", stage=name, allocated_bytes=stats["allocated"],
                         reserved_bytes=stats["reserved"]))

    empty_cache(device)
    stage("start")
    x = torch.empty(numel, device=device)
    stage(f"after allocating {mib} MiB")
    del x
    stage("after del")
    empty_cache(device)
    stage("after empty_cache()")

    for how in ("cached", "fresh"):
        times = []
        for _ in range(repeats):
            if how == "fresh":
                empty_cache(device)
            synchronize(device)
            start = time.perf_counter()
            y = torch.empty(numel, device=device)
            synchronize(device)
            times.append(time.perf_counter() - start)
            del y
        t = bench.Timing.from_times(times)
        rows.append(_row(device, "memory", t, experiment="allocation", allocation=how, bytes=numel * 4))
    return rows


# --------------------------------------------------------------------------------------------
# the suite


def suite_gpu(options: argparse.Namespace) -> list[dict[str, Any]]:
    """Chapter 07's lessons on the current device (pick_device(): MICROGPT_DEVICE or the best).

    --sizes sets the crossover sizes, --dtypes the precision modes (tf32 joins float32 on GPUs
    that have it). torch.compile rows only with MICROGPT_FULL=1: compiling takes long.
    """
    from .show import FULL

    device = pick_device()
    quick, gpu = getattr(options, "quick", False), device.type != "cpu"
    repeats = 3 if quick else options.repeats
    if quick:
        sizes = options.sizes or [32, 128]
    else:
        sizes = options.sizes or ([16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] if gpu
                                  else [16, 32, 64, 128, 256, 512, 1024] + ([2048] if FULL else []))
    modes = None
    if options.dtypes:
        modes = [d for d in options.dtypes if d in supported_dtypes(device)]
        if "float32" in modes and supports_tf32(device):
            modes.insert(modes.index("float32") + 1, "tf32")
    precision_sizes = [128] if quick else ([1024, 4096, 8192] if gpu else [512, 1024] if FULL else [512])

    name = describe(device)["name"]
    print(f"gpu suite on {device} ({name})" + ("" if gpu else ": no GPU here, so every lesson runs on the CPU"),
          file=sys.stderr)
    rows = (transfer_rows(device, [1] if quick else [1, 16, 64, 256], repeats)
            + resident_rows(device, batch=256 if quick else 1024, steps=5 if quick else 20, repeats=repeats)
            + sync_rows(device, 256 if quick else (4096 if gpu else 1024), repeats=repeats)
            + launch_rows(device, (1, 10_000) if quick else (1, 1_000, 100_000, 10_000_000), repeats=repeats,
                          compile=FULL and not quick)
            + crossover_rows(device, sizes, repeats=repeats)
            + precision_rows(device, precision_sizes, modes, repeats=repeats)
            + memory_rows(device, 16 if quick else 256, repeats=repeats))
    return [{**row, "device_name": name} for row in rows]
