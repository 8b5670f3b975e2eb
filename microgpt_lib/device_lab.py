"""Chapter 07's experiments: what moving data, synchronising, launching and precision cost.

One function per lesson, measured on any device and gathered by suite_gpu (the `gpu` suite):
    transfer_rows      host <-> device copies, pageable vs pinned memory     (GPUs only)
    resident_rows      data kept on the device vs copied every step; .item() every step
    sync_rows          timing without synchronising (wrong) vs with it (right), and events
    launch_rows        the fixed cost per op, and what amortises it (batching, CUDA graphs, compile)
    crossover_rows     numpy's CPU BLAS vs torch on the device, by matrix size
    precision_rows     float32 vs TF32 / bfloat16 / float16: speed and accuracy
    memory_rows        the caching allocator: allocated vs reserved, cached vs fresh allocations
    simulated_sync_rows   the timing lesson on a SimulatedGPU (a queue that needs no GPU)
    cpu_threads(device, n)    a block in which torch runs CPU ops on n threads (tiny or equal
                              work on a CPU: one thread keeps a thread pool's noise out)

Exercises (each checker returns a message, or raises AssertionError saying what is wrong):
    check_gpu_timer(timer)         time an op on a device whose calls return before the work is done
    check_run_steps(run_steps)     a loop of steps that reads the losses back once, not every step
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from . import bench, machine
from .device import (
    DTYPES,
    describe,
    empty_cache,
    event_timing,
    memory_stats,
    pick_device,
    supported_dtypes,
    supports_tf32,
    sync_for,
    synchronize,
    tf32_matmul,
    torch_dtype,
    tracks_memory,
)

MIB = 1 << 20

# --------------------------------------------------------------------------------------------
# the lessons, measured


def random_matrices(
    n: int, dtype: str, device: torch.device, count: int = 2, seed: int = 0
) -> list[torch.Tensor]:
    """Random N x N matrices drawn on the CPU in float32 (the same on every device), then moved."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, n, generator=generator).to(
            device=device, dtype=torch_dtype(dtype, device)
        )
        for _ in range(count)
    ]


def _row(
    device: torch.device, kind: str, timing: bench.Timing | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "device": device.type,
        **fields,
        **(timing.as_row() if timing else {}),
    }


def _matmul_row(
    device: torch.device,
    kind: str,
    kernel: str,
    n: int,
    dtype: str,
    timing: bench.Timing,
    **fields: Any,
) -> dict[str, Any]:
    family = (
        "blas"
        if kernel.startswith("numpy")
        else ("torch-cpu" if device.type == "cpu" else "gpu")
    )
    threads = torch.get_num_threads() if family == "torch-cpu" else None
    return {
        "kind": kind,
        "device": device.type,
        **bench.matmul_row(kernel, family, n, dtype, threads, timing, **fields),
    }


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    """Inside the block, torch runs CPU ops on ``threads`` threads (nothing changes on a GPU)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def transfer_rows(
    device: torch.device, sizes_mib: Sequence[int] = (1, 16, 64), repeats: int = 7
) -> list[dict[str, Any]]:
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
        # device-to-host copies into buffers allocated once: pageable vs pinned is all that differs
        cases = [
            ("host-to-device", "pageable", lambda: host.to(device)),
            ("device-to-host", "pageable", lambda: host_out.copy_(on_device)),
        ]
        if (
            device.type == "cuda"
        ):  # MPS shares memory with the CPU: pinning does not apply
            pinned_host, pinned_out = (
                host.pin_memory(),
                torch.empty(host.numel(), pin_memory=True),
            )
            cases += [
                (
                    "host-to-device",
                    "pinned",
                    lambda: pinned_host.to(device, non_blocking=True),
                ),
                (
                    "device-to-host",
                    "pinned",
                    lambda: pinned_out.copy_(on_device, non_blocking=True),
                ),
            ]
        for direction, memory, fn in cases:
            t = bench.measure(fn, warmup=2, repeats=repeats, sync=sync)
            rows.append(
                _row(
                    device,
                    "transfer",
                    t,
                    direction=direction,
                    memory=memory,
                    bytes=host.numel() * 4,
                    gb_per_s=host.numel() * 4 / t.median_s / 1e9,
                )
            )
    return rows


def _mlp_step(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """A stand-in training step's forward: two matmuls, a ReLU and a mean."""
    return (torch.relu(x @ w1) @ w2).square().mean()


def resident_rows(
    device: torch.device,
    batch: int = 1024,
    width: int = 256,
    steps: int = 20,
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Seconds per step of a small MLP forward, ``steps`` steps in a row, three ways:

    (on the CPU with one torch thread: there the three do the same work)
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
        "copy every step": lambda: [
            _mlp_step(x_host.to(device), w1, w2) for _ in range(steps)
        ],
    }
    # on the CPU the three do the same work, so only noise can tell them apart: one torch
    # thread keeps the noise of a thread pool on a busy machine out of the comparison
    with cpu_threads(device, 1):
        timings = bench.measure_interleaved(cases, repeats=repeats, sync=sync_for(device))
    return [
        _row(
            device,
            "resident",
            t,
            mode=mode,
            batch=batch,
            width=width,
            steps=steps,
            step_s=t.median_s / steps,
            bytes_per_step=x_host.numel() * 4,
        )
        for mode, t in timings.items()
    ]


def sync_rows(
    device: torch.device, n: int = 2048, dtype: str = "float32", repeats: int = 7
) -> list[dict[str, Any]]:
    """The same matmul timed three ways: no synchronisation (wrong on a GPU: it times the launch
    only), synchronising before each clock read (right), and device events (right, GPU only)."""
    a, b = random_matrices(n, dtype, device)
    # one sample of each in turn; the right one synchronises before its clock starts, so the queue
    # the wrong one left behind is drained outside the timed region
    # (on the CPU both do the same work: one torch thread keeps a thread pool's noise out)
    with cpu_threads(device, 1):
        timings = bench.measure_interleaved(
            {"no sync (wrong)": lambda: a @ b, "synchronize": lambda: a @ b},
            repeats=repeats,
            syncs={"no sync (wrong)": None, "synchronize": sync_for(device)},
        )
        synchronize(device)
        rows = [
            _matmul_row(
                device, "sync", f"torch-{device.type}", n, dtype, t, method=method
            )
            for method, t in timings.items()
        ]
    if device.type != "cpu":
        rows.append(
            _matmul_row(
                device,
                "sync",
                f"torch-{device.type}",
                n,
                dtype,
                event_timing(lambda: a @ b, device, repeats),
                method="events",
            )
        )
    return rows


def layer_chain(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x = tanh(x @ w)`` for each w: two small ops per layer, a microgpt-sized stack of them."""
    for w in weights:
        x = torch.tanh(x @ w)
    return x


def cuda_graph(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Capture fn's kernels into a CUDA graph once; the callable returned replays them in one go.

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


def launch_rows(
    device: torch.device,
    numels: Sequence[int] = (1, 1_000, 100_000, 10_000_000),
    width: int = 16,
    layers: int = 8,
    batch: int = 64,
    repeats: int = 7,
    compile: bool = False,
) -> list[dict[str, Any]]:
    """The fixed cost of an op, and what amortises it.

    op size       one ``torch.add(x, 1, out=y)`` by tensor size: flat (launch overhead) until the
                  data is big enough for memory bandwidth to matter
    chain         ``layers`` x (matmul + tanh) on width x width matrices (2*layers ops), run
                  eagerly; on a stack of ``batch`` inputs in one call each op (batching); replayed
                  as one CUDA graph (CUDA); torch.compile'd (only if compile=True: seconds to min.
                  of compiling, and it needs a C compiler on the CPU); on the CPU the chain
                  runs on one torch thread
    """
    sync, rows = sync_for(device), []
    for numel in numels:
        x, out = torch.zeros(numel, device=device), torch.empty(numel, device=device)
        t = bench.measure(
            lambda: torch.add(x, 1, out=out),
            warmup=2,
            repeats=repeats,
            min_time=0.02,
            sync=sync,
        )
        rows.append(
            _row(
                device,
                "launch",
                t,
                part="op size",
                op="add",
                numel=numel,
                gb_per_s=2 * 4 * numel / t.median_s / 1e9,
            )
        )  # reads x, writes out

    # on the CPU the chain runs on one torch thread: its ops are tiny, a thread pool would add
    # its own wake-ups, and on a busy machine each op would wait for a descheduled thread
    with cpu_threads(device, 1):
        generator = torch.Generator().manual_seed(0)
        weights = [
            (torch.randn(width, width, generator=generator) / width**0.5).to(device)
            for _ in range(layers)
        ]
        x_one = torch.randn(width, width, generator=generator).to(device)
        x_many = torch.randn(batch, width, width, generator=generator).to(device)
        cases: dict[str, Callable[[], Any]] = {
            "eager": lambda: layer_chain(x_one, weights),
            f"eager, batch of {batch}": lambda: layer_chain(x_many, weights),
        }
        if device.type == "cuda":
            cases["cuda graph"] = cuda_graph(lambda: layer_chain(x_one, weights))
        compile_s = {}
        if compile:
            # reduce-overhead: replay as CUDA graphs
            mode = "reduce-overhead" if device.type == "cuda" else "default"
            method = f"torch.compile ({mode})"
            compiled = torch.compile(layer_chain, mode=mode)
            start = time.perf_counter()
            try:
                # reduce-overhead records its CUDA graph on a later call than the first
                for _ in range(3):
                    compiled(x_one, weights)
                synchronize(device)
            except Exception as error:
                # e.g. no C++ compiler, or a backend torch.compile lacks
                rows.append(
                    _row(
                        device,
                        "launch",
                        None,
                        part="chain",
                        method=method,
                        ops=2 * layers,
                        batch=1,
                        width=width,
                        error=f"{type(error).__name__}: {error}"[:300],
                    )
                )
            else:
                compile_s[method] = time.perf_counter() - start
                cases[method] = lambda: compiled(x_one, weights)
        timings = bench.measure_interleaved(
            cases, repeats=repeats, min_time=0.02, sync=sync
        )
        for method, t in timings.items():
            samples = batch if method.startswith("eager, batch") else 1
            extra = {"compile_s": compile_s[method]} if method in compile_s else {}
            rows.append(
                _row(
                    device,
                    "launch",
                    t,
                    part="chain",
                    method=method,
                    ops=2 * layers,
                    batch=samples,
                    width=width,
                    per_op_s=t.median_s / (2 * layers),
                    per_sample_s=t.median_s / samples,
                    torch_threads=torch.get_num_threads()
                    if device.type == "cpu"
                    else None,
                    **extra,
                )
            )
    return rows


def crossover_rows(
    device: torch.device,
    sizes: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
    dtype: str = "float32",
    repeats: int = 7,
) -> list[dict[str, Any]]:
    """numpy (the CPU's BLAS) vs torch on ``device`` for N x N matmuls, by N.

    On a GPU also "with copies": inputs copied to the device and the result back, each call —
    the cost of a one-off product on data that lives on the host. Grouped by backend, so the CPU
    BLAS's spinning worker threads do not run into torch's.
    """
    rng = np.random.default_rng(0)
    host = {
        n: (
            rng.standard_normal((n, n)).astype(dtype),
            rng.standard_normal((n, n)).astype(dtype),
        )
        for n in sizes
    }
    sync, kernel, rows = sync_for(device), f"torch-{device.type}", []
    for n, (a, b) in host.items():
        t = bench.measure(lambda: a @ b, warmup=1, repeats=repeats, min_time=0.02)
        rows.append(_matmul_row(device, "crossover", "numpy", n, dtype, t))
    for n, (a, b) in host.items():
        ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        t = bench.measure(
            lambda: ta @ tb, warmup=2, repeats=repeats, min_time=0.02, sync=sync
        )
        rows.append(_matmul_row(device, "crossover", kernel, n, dtype, t))
        if device.type != "cpu":
            t = bench.measure(
                lambda: (
                    torch.from_numpy(a).to(device) @ torch.from_numpy(b).to(device)
                ).cpu(),
                warmup=2,
                repeats=repeats,
                min_time=0.02,
                sync=sync,
            )
            rows.append(
                _matmul_row(device, "crossover", kernel + " with copies", n, dtype, t)
            )
    return rows


def crossover_size(
    rows: Sequence[dict[str, Any]], fast: str, slow: str = "numpy"
) -> int | None:
    """The smallest N from which kernel ``fast`` beats ``slow`` at every measured larger N."""

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
    """float32, then the faster, less precise ways a device multiplies: tf32, bfloat16, float16."""
    return (
        ["float32"]
        + (["tf32"] if supports_tf32(device) else [])
        + [d for d in ("bfloat16", "float16") if d in supported_dtypes(device)]
    )


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """||result - reference|| / ||reference|| (Frobenius), computed in float64 on the CPU."""
    result, reference = (
        result.detach().to("cpu", torch.float64),
        reference.detach().to("cpu", torch.float64),
    )
    return float(torch.linalg.norm(result - reference) / torch.linalg.norm(reference))


def precision_rows(
    device: torch.device,
    sizes: Sequence[int] = (512,),
    modes: Sequence[str] | None = None,
    repeats: int = 7,
    max_reference_n: int = 2048,
) -> list[dict[str, Any]]:
    """Speed and accuracy of an N x N matmul in each precision mode.

    The inputs are the same float32 matrices for every mode (rounded to bfloat16/float16 where
    that is the mode: part of the real cost); the reference is their product in float64 (on the
    device if it has float64, else on the CPU up to max_reference_n). 'tf32' keeps float32 tensors
    and lets CUDA tensor cores round the inputs to a 10-bit mantissa inside the matmul.
    """
    modes = list(modes or precision_modes(device))
    available = precision_modes(device) + (
        ["float64"] if "float64" in supported_dtypes(device) else []
    )
    missing = [m for m in modes if m not in available]
    if missing:
        raise ValueError(
            f"precision modes {', '.join(missing)} are not available on {device.type}; "
            f"it has {', '.join(available)}"
        )
    sync, rows = sync_for(device), []
    for n in sizes:
        a32, b32 = random_matrices(n, "float32", device)
        reference = None
        if "float64" in supported_dtypes(device):
            reference = a32.double() @ b32.double()
        elif n <= max_reference_n:
            reference = a32.cpu().double() @ b32.cpu().double()
        for mode in modes:
            dtype = "float32" if mode == "tf32" else mode
            a, b = a32.to(DTYPES[dtype]), b32.to(DTYPES[dtype])
            with tf32_matmul() if mode == "tf32" else contextlib.nullcontext():
                t = bench.measure(
                    lambda: a @ b, warmup=2, repeats=repeats, min_time=0.02, sync=sync
                )
                error = (
                    relative_error(a @ b, reference) if reference is not None else None
                )
            rows.append(
                _matmul_row(
                    device,
                    "precision",
                    f"torch-{device.type}",
                    n,
                    dtype,
                    t,
                    mode=mode,
                    relative_error=error,
                    epsilon=2.0**-10
                    if mode == "tf32"
                    else torch.finfo(DTYPES[dtype]).eps,
                )
            )
    return rows


def memory_rows(
    device: torch.device, mib: int = 256, repeats: int = 5
) -> list[dict[str, Any]]:
    """The caching allocator, step by step (GPUs only; the CPU has none: returns []).

    Allocated memory drops when a tensor is freed, reserved memory does not: the block stays cached
    for the next allocation of that size, which is then much faster than asking the driver. After
    empty_cache() the block goes back to the driver. Then: a cached vs a fresh allocation, timed.
    """
    if not tracks_memory(device):
        return []
    numel, rows = mib * MIB // 4, []

    def stage(name: str) -> None:
        synchronize(device)
        stats = memory_stats(device)
        rows.append(
            _row(
                device,
                "memory",
                None,
                part="stages",
                stage=name,
                allocated_bytes=stats["allocated"],
                reserved_bytes=stats["reserved"],
            )
        )

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
        rows.append(
            _row(device, "memory", t, part="allocation", allocation=how, bytes=numel * 4)
        )
    return rows


# --------------------------------------------------------------------------------------------
# a simulated GPU queue, for the timing lesson on machines without a GPU


class SimulatedGPU:
    """A stand-in for a GPU's queue: op() returns at once, and its work "runs" for op_s seconds
    after the work queued before it; synchronize() waits until the queue has drained.

    It behaves like a GPU only in the way that matters for timing (calls return before the work
    is done), and it counts its synchronisations and ops, so a checker can see what a timer did.
    """

    def __init__(self, op_s: float = 0.002) -> None:
        if op_s <= 0:
            raise ValueError(f"op_s must be positive, got {op_s!r}")
        self.op_s = op_s
        self.busy_until = 0.0  # perf_counter time at which the queued work will be done
        self.ops = 0
        self.syncs = 0

    def op(self) -> None:
        """Queue one op and return at once, as a GPU call does."""
        self.busy_until = max(self.busy_until, time.perf_counter()) + self.op_s
        self.ops += 1

    def synchronize(self) -> None:
        """Block until every queued op has finished."""
        self.syncs += 1
        wait = self.busy_until - time.perf_counter()
        if wait > 0:
            time.sleep(wait)


def simulated_sync_rows(op_s: float = 0.002, repeats: int = 5) -> list[dict[str, Any]]:
    """sync_rows's lesson on a SimulatedGPU: timing its op without synchronising, and with."""
    gpu, rows = SimulatedGPU(op_s), []
    for method, sync in (("no sync (wrong)", None), ("synchronize", gpu.synchronize)):
        gpu.synchronize()  # start each with an empty queue
        t = bench.measure(gpu.op, warmup=1, repeats=repeats, sync=sync)
        rows.append(
            {"kind": "simulated-sync", "method": method, "op_s": op_s, **t.as_row()}
        )
    gpu.synchronize()
    return rows


# --------------------------------------------------------------------------------------------
# exercises: each checker returns a short message, or raises AssertionError saying what is wrong


def reference_gpu_timer(
    fn: Callable[[], Any], sync: Callable[[], Any], repeats: int = 5
) -> float:
    """Median seconds per call of fn on a device whose calls return before the work is done."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()  # the clock must not start while earlier work is still queued...
        start = time.perf_counter()
        fn()
        sync()  # ...nor stop before fn's own work is done
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_gpu_timer(
    timer: Callable[[Callable[[], Any], Callable[[], Any], int], float],
    op_s: float = 0.005,
) -> str:
    """Exercise: timer(fn, sync, repeats) must return the median seconds per call of fn.

    Checked on a SimulatedGPU, whose op() returns at once and keeps the device busy op_s
    seconds: first with work already queued and repeats=1, then with repeats=5.
    """
    gpu = SimulatedGPU(op_s)
    for repeats, queued in ((1, 4), (5, 0)):
        gpu.synchronize()
        for _ in range(queued):  # work left by earlier code: not the timer's to count
            gpu.op()
        try:
            seconds = float(timer(gpu.op, gpu.synchronize, repeats))
        except TypeError as error:
            raise AssertionError(
                "the checker calls timer(fn, sync, repeats) and expects seconds per call "
                f"(a float): {error}"
            ) from error
        said = f"timer(fn, sync, {repeats}) said {seconds * 1e6:,.0f} µs per call"
        if seconds < 0.5 * op_s:
            raise AssertionError(
                f"{said}, but each call keeps the (simulated) device busy for "
                f"{op_s * 1e6:,.0f} µs: the clock stopped while the work was still queued. "
                "Call sync() after fn() and before reading the clock."
            )
        if seconds > 2.5 * op_s:
            raise AssertionError(
                f"{said}, but one call takes {op_s * 1e6:,.0f} µs: it counted more than fn's "
                "own work — work queued before the clock started (call sync() before "
                "starting it too), or the sum of the repeats instead of their median"
            )
    gpu.synchronize()
    return (
        f"right: {seconds * 1e6:,.0f} µs per call for an op that keeps the simulated device "
        f"busy {op_s * 1e6:,.0f} µs ({gpu.syncs} synchronisations in all)"
    )


_HOST_READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "__float__",
    "__int__",
    "__bool__",
    "__index__",
    "__repr__",
    "__str__",
    "__format__",
}


def _to_the_cpu(args: tuple, kwargs: dict) -> bool:
    """Whether a Tensor.to(...) call's arguments name the CPU as its target."""
    for value in (*args[1:], kwargs.get("device")):
        if isinstance(value, torch.device) and value.type == "cpu":
            return True
        if isinstance(value, str) and value.split(":")[0].strip().lower() == "cpu":
            return True
    return False


class CountedTensor(torch.Tensor):
    """A tensor that records every call that brings its value back to the host as Python
    numbers or CPU memory (.item(), .tolist(), float(), .cpu(), printing...). On a GPU each of
    those waits for the queue to drain: a synchronisation."""

    reads: list[str] = []  # shared by every CountedTensor; cleared by the checker

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS or (name == "to" and _to_the_cpu(args, kwargs)):
            cls.reads.append(name)
        return super().__torch_function__(func, types, args, kwargs)


def item_every_step(step: Callable[[], torch.Tensor], steps: int) -> list[float]:
    """The habit to lose: read each step's loss as a Python number, right away."""
    return [step().item() for _ in range(steps)]


def reference_run_steps(step: Callable[[], torch.Tensor], steps: int) -> list[float]:
    """Every step's loss, read back once at the end: the device never waits for Python."""
    losses = [step().detach() for _ in range(steps)]  # stay on the device; nothing waits
    return torch.stack(losses).tolist()  # one read (one synchronisation) for all of them


def _loss_steps(
    device: torch.device, batch: int, width: int, counted: bool
) -> Callable[[], torch.Tensor]:
    """A step function: a small MLP forward whose loss differs from one call to the next."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, width, generator=generator).to(device)
    w1, w2 = (
        (torch.randn(width, width, generator=generator) / width**0.5).to(device)
        for _ in range(2)
    )
    calls = [0]

    def step() -> torch.Tensor:
        calls[0] += 1
        loss = _mlp_step(x * (1 + calls[0] % 10 / 10), w1, w2)
        return loss.as_subclass(CountedTensor) if counted else loss

    return step


def check_run_steps(
    run_steps: Callable[[Callable[[], torch.Tensor], int], list[float]],
    device: str | torch.device = "cpu",
    steps: int = 20,
) -> str:
    """Exercise: run_steps(step, steps) must call step() ``steps`` times and return every loss as
    a Python float, reading values back from the device at most twice in all (not once a
    step). Then it is timed against item_every_step on ``device``, and the message says how
    they compare."""
    device = pick_device(device)
    expected = item_every_step(_loss_steps(device, 64, 32, counted=False), steps)
    step = _loss_steps(device, 64, 32, counted=True)
    CountedTensor.reads.clear()
    try:
        got = run_steps(step, steps)
    except Exception as error:  # the reader's code: say what it raised
        raise AssertionError(
            f"run_steps raised {type(error).__name__}: {error}"
        ) from error
    reads = list(CountedTensor.reads)
    if not isinstance(got, list) or not all(isinstance(v, float) for v in got):
        raise AssertionError(
            f"run_steps must return a list of Python floats, got {type(got).__name__}"
            + (f" of {type(got[0]).__name__}" if isinstance(got, list) and got else "")
        )
    if len(got) != steps:
        raise AssertionError(f"run_steps returned {len(got)} losses for {steps} steps")
    if not np.allclose(got, expected, rtol=1e-5, atol=1e-7):
        raise AssertionError(
            "the losses differ from those of the steps in order: "
            f"expected {expected[:3]}..., got {got[:3]}..."
        )
    if len(reads) > 2:
        raise AssertionError(
            f"{len(reads)} reads back from the device for {steps} steps "
            f"({', '.join(sorted(set(reads)))}): each one makes the CPU wait for the device. "
            "Keep the losses as tensors and read them all at once, at the end."
        )
    big = _loss_steps(
        device, 1024, 256, counted=False
    )  # the size of resident_rows's step
    cases = {
        "item every step": lambda: item_every_step(big, steps),
        "yours": lambda: run_steps(big, steps),
    }
    with cpu_threads(device, 1):  # as in resident_rows: on a CPU only noise differs
        timings = bench.measure_interleaved(cases, repeats=5, sync=sync_for(device))
    item_s = timings["item every step"].median_s / steps
    yours_s = timings["yours"].median_s / steps
    note = (
        " (on a CPU nothing runs asynchronously, so the two are alike: the gain is a GPU's)"
        if device.type == "cpu"
        else ""
    )
    return (
        f"right: {len(reads)} read(s) back for {steps} steps. On {device}: "
        f"{item_s * 1e6:,.0f} µs per step with .item() every step, {yours_s * 1e6:,.0f} µs "
        f"with yours ({item_s / yours_s:.2f}x){note}"
    )


# --------------------------------------------------------------------------------------------
# the suite


def suite_gpu(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """Chapter 07's lessons on the current device (pick_device(): MICROGPT_DEVICE or the best).

    --sizes sets the crossover sizes, --dtypes the precision modes (tf32 joins float32 on GPUs
    that have it). torch.compile rows only with MICROGPT_FULL=1: compiling takes long.
    """
    device = pick_device()
    quick, gpu, full = options.quick, device.type != "cpu", machine.FULL
    repeats = options.rounds
    if quick:
        sizes = options.sizes or [32, 128]
    else:
        sizes = options.sizes or (
            [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
            if gpu
            else [16, 32, 64, 128, 256, 512, 1024] + ([2048] if full else [])
        )
    modes = None
    if options.dtypes:
        modes = [d for d in options.dtypes if d in supported_dtypes(device)]
        if "float32" in modes and supports_tf32(device):
            modes.insert(modes.index("float32") + 1, "tf32")
    precision_sizes = (
        [128]
        if quick
        else ([1024, 4096, 8192] if gpu else [512, 1024] if full else [512])
    )

    name = describe(device)["name"]
    print(
        f"gpu suite on {device} ({name})"
        + ("" if gpu else ": no GPU here, so every lesson runs on the CPU"),
        file=sys.stderr,
    )
    rows = (
        transfer_rows(device, [1] if quick else [1, 16, 64, 256], repeats)
        + resident_rows(
            device,
            batch=256 if quick else 1024,
            steps=5 if quick else 20,
            repeats=repeats,
        )
        + sync_rows(device, 256 if quick else (4096 if gpu else 1024), repeats=repeats)
        + launch_rows(
            device,
            (1, 10_000) if quick else (1, 1_000, 100_000, 10_000_000),
            repeats=repeats,
            compile=full and not quick,
        )
        + crossover_rows(device, sizes, repeats=repeats)
        + precision_rows(device, precision_sizes, modes, repeats=repeats)
        + memory_rows(device, 16 if quick else 256, repeats=repeats)
    )
    return [{**row, "device_name": name} for row in rows]
