"""Chapter 07's experiments: what moving data, synchronising, launching and precision cost.

One function per lesson, measured on any device and gathered by suite_gpu (the `gpu` suite):
    transfer_rows      host <-> device copies, pageable vs pinned memory     (GPUs only)
    resident_rows      data kept on the device vs copied every step; .item() every step
    sync_rows          timing without synchronising (wrong) vs with it (right), and events
    launch_rows        the fixed cost per op, and what amortises it (batching, CUDA graphs, compile)
    crossover_rows     numpy's CPU BLAS vs torch on the device, by matrix size
    precision_rows     float32 vs TF32 / bfloat16 / float16: speed and accuracy
    memory_rows        the caching allocator: allocated vs reserved, cached vs fresh allocations
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Sequence

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
    timings = bench.measure_interleaved(
        {"no sync (wrong)": lambda: a @ b, "synchronize": lambda: a @ b},
        repeats=repeats,
        syncs={"no sync (wrong)": None, "synchronize": sync_for(device)},
    )
    synchronize(device)
    rows = [
        _matmul_row(device, "sync", f"torch-{device.type}", n, dtype, t, method=method)
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
                  of compiling, and it needs a C compiler on the CPU)
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
        mode = (
            "reduce-overhead" if device.type == "cuda" else "default"
        )  # reduce-overhead = CUDA graphs
        method = f"torch.compile ({mode})"
        compiled = torch.compile(layer_chain, mode=mode)
        start = time.perf_counter()
        try:
            for _ in range(
                3
            ):  # reduce-overhead records its CUDA graph on a later call than the first
                compiled(x_one, weights)
            synchronize(device)
        except (
            Exception
        ) as error:  # e.g. no C++ compiler, or a backend torch.compile lacks
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
    timings = bench.measure_interleaved(cases, repeats=repeats, min_time=0.02, sync=sync)
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
