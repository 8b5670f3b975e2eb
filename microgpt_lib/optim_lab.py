"""Chapter 08's experiments: the optimizer ladder, what each rung allocates, and the lessons
around it (temporaries, NEP 50, decoupled decay, clipping).

    model_parameters(config)     a GPT's weights as optim.Parameters, with random gradients
    ladder_cases(config, ...)    one AdamW step per implementation, ready to time: the scalar
                                 loop, numpy naive / out= / foreach, numba fused, torch.optim
    ladder_rows(config, ...)     time per step, bytes allocated per step, GB/s, vs torch
    parity_with_torch(...)       the largest relative difference from torch.optim over n steps
    temporary_rows(sizes)        bytes a numpy expression holds at its peak, by array size
    nep50_rows()                 float32 array times a numpy float64 scalar vs a Python float
    decay_trajectories(...)      a weight with no data gradient under Adam + L2 vs AdamW
    suite_optim(options)         python -m microgpt_lib.bench optim
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import bench, machine, optim
from .autograd import Value
from .config import GPTConfig, init_weights, param_shapes

# microgpt's Adam settings, with decoupled decay as chapter 10 will train
SETTINGS = {"lr": 0.01, "betas": (0.85, 0.99), "eps": 1e-8, "weight_decay": 0.01}
MICROGPT = GPTConfig(vocab_size=27)  # 4,192 parameters
LARGE = GPTConfig(vocab_size=27, block_size=64, n_layer=4, n_embd=256, n_head=4)  # ~3.2 M


def model_parameters(
    config: GPTConfig, seed: int = 0, flat: bool = False
) -> list[optim.Parameter]:
    """The config's weight matrices as Parameters (random values and gradients from seed),
    flattened into one buffer if flat."""
    rng = np.random.default_rng(seed)
    params = [
        optim.Parameter(rng.standard_normal(shape) * 0.08)
        for _, shape in param_shapes(config).named_parameters()
    ]
    for p in params:
        p.grad[...] = rng.standard_normal(p.data.shape) * 1e-2
    if flat:
        optim.flatten_(params)
    return params


def _torch_step(
    config: GPTConfig, seed: int, threads: int | None, **flags: Any
) -> Callable:
    import torch

    tensors = [
        torch.tensor(p.data, requires_grad=True) for p in model_parameters(config, seed)
    ]
    for t, p in zip(tensors, model_parameters(config, seed)):
        t.grad = torch.tensor(p.grad)
    opt = torch.optim.AdamW(tensors, **SETTINGS, **flags)
    if threads is None:
        return opt.step

    def step() -> None:  # on as many threads as ours, for a like-for-like time
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            opt.step()
        finally:
            torch.set_num_threads(before)

    return step


def _value_step(config: GPTConfig, seed: int) -> Callable[[], Any]:
    weights = init_weights(config, seed)
    values = [Value(w) for _, m in weights.named_parameters() for row in m for w in row]
    opt = optim.ValueAdam(values, betas=SETTINGS["betas"], eps=SETTINGS["eps"])
    grads = np.random.default_rng(seed).standard_normal(len(values)) * 1e-2

    def step() -> None:
        for v, g in zip(values, grads.tolist()):
            v.grad = g  # ValueAdam zeroes the gradients it used
        opt.step(SETTINGS["lr"])

    return step


def ladder_cases(
    config: GPTConfig, seed: int = 0, scalar: bool = True
) -> dict[str, Callable[[], Any]]:
    """name -> a callable doing one optimizer step (AdamW, microgpt's betas) on the config's
    weights. scalar=False leaves out the loop over Values (too slow for large models).

    Below optim.PARALLEL_MIN parameters our kernel runs on one thread, and torch's steps are
    given one thread too; above it, both run on all. There the fused kernel also runs on one
    thread, to compare with numpy's rungs (which always run on one)."""
    parallel = config.num_params() >= optim.PARALLEL_MIN
    torch_threads = None if parallel else 1
    cases: dict[str, Callable[[], Any]] = {}
    if scalar:
        cases["scalar Values (microgpt)"] = _value_step(config, seed)
    for impl in optim.IMPLS:
        params = model_parameters(config, seed, flat=impl in ("foreach", "fused"))
        cases[f"numpy {impl}" if impl != "fused" else "numba fused"] = optim.AdamW(
            params, impl=impl, **SETTINGS
        ).step
    # the same kernel without the finiteness check: the work torch's fused step does
    params = model_parameters(config, seed, flat=True)
    cases["numba fused, no check"] = optim.AdamW(
        params, check_finite=False, **SETTINGS
    ).step
    if parallel:
        fused = optim.AdamW(model_parameters(config, seed, flat=True), **SETTINGS)

        def fused_one_thread() -> None:
            with machine.numba_threads(1):
                fused.step()

        cases["numba fused, 1 thread"] = fused_one_thread
    for label, flags in (
        ("torch for-loop", {"foreach": False}),
        ("torch foreach", {"foreach": True}),
        ("torch fused", {"fused": True}),
    ):
        cases[label] = _torch_step(config, seed, torch_threads, **flags)
    return cases


def ladder_rows(
    config: GPTConfig,
    *,
    repeats: int = 7,
    scalar: bool = True,
    bandwidth_gbs: float | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Each implementation's step timed on its own, with its peak bytes allocated per step.

    gbytes_per_s counts the 7 arrays an Adam step must move (read p, g, m, v; write p, m, v);
    with bandwidth_gbs (machine.measure_bandwidth's median) it is also a percentage of it.
    bytes_allocated_per_step is None for torch's rungs: torch allocates through its own
    allocator, which tracemalloc does not see.
    """
    n = config.num_params()
    cases = ladder_cases(config, seed, scalar)
    # Each rung is timed on its own, step after step, as a training loop calls it. Round-robin
    # would be unfair here: torch and numba each keep their own OpenMP threads, which spin for
    # a while after a parallel region and slow the other down (chapter 05's spin-wait trap),
    # and the naive rung's temporaries evict the others' arrays from the caches.
    with machine.limit_blas_threads(1):  # no spinning BLAS pool either
        timings = {
            name: bench.measure(fn, warmup=2, repeats=repeats, min_time=0.01)
            for name, fn in cases.items()
        }
        allocated = {
            name: bench.peak_allocation(fn, repeats=2)
            for name, fn in cases.items()
            if not name.startswith("torch")
        }
    rows = []
    for name, t in timings.items():
        moved = 7 * n * 8
        row = {
            "kind": "ladder",
            "impl": name,
            "params": n,
            "ms_per_step": 1e3 * t.median_s,
            **t.as_row(),
            "bytes_allocated_per_step": allocated.get(name),
            "gbytes_per_s": moved / t.median_s / 1e9,
        }
        if bandwidth_gbs:
            row["percent_of_bandwidth"] = 100 * row["gbytes_per_s"] / bandwidth_gbs
        rows.append(row)
    torch_fused = next(r for r in rows if r["impl"] == "torch fused")["median_s"]
    for row in rows:
        row["speedup_over_torch_fused"] = torch_fused / row["median_s"]
    return rows


def parity_with_torch(
    kind: str = "AdamW",
    impl: str = "fused",
    steps: int = 100,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
) -> float:
    """The largest difference between optim and torch.optim after `steps` steps of the same
    gradients (float64, microgpt's shapes), relative to each parameter's largest weight."""
    import torch

    settings = dict(SETTINGS if settings is None else settings)
    params = model_parameters(MICROGPT, seed, flat=impl in ("foreach", "fused"))
    tensors = [torch.tensor(p.data, requires_grad=True) for p in params]
    ours = getattr(optim, kind)(params, impl=impl, **settings)
    theirs = getattr(torch.optim, kind)(tensors, **settings)
    rng = np.random.default_rng(seed + 1)
    for _ in range(steps):
        for p, t in zip(params, tensors):
            p.grad[...] = rng.standard_normal(p.data.shape) * 1e-2
            t.grad = torch.tensor(p.grad)
        ours.step()
        theirs.step()
    # each parameter's largest difference relative to its largest weight (an element that
    # happens to pass near zero would make an elementwise ratio meaningless)
    return max(
        float(np.max(np.abs(p.data - t.detach().numpy())) / np.max(np.abs(p.data)))
        for p, t in zip(params, tensors)
    )


def temporary_rows(
    sizes: tuple[int, ...] = (1_000, 4_192, 32_768, 100_000, 1_000_000),
) -> list[dict[str, Any]]:
    """Peak bytes held while numpy evaluates ``a * 0.5 + 1.0`` (two operations), per element.

    Without help each operation makes a new array, so at the peak two temporaries are alive
    (16 bytes per float64 element). numpy reuses a temporary in place when it is the only
    reference and at least 256 KiB: then one array suffices (8 bytes per element).
    """
    rows = []
    for n in sizes:
        a = np.ones(n)
        peak = bench.peak_allocation(lambda a=a: a * 0.5 + 1.0)
        rows.append(
            {
                "kind": "temporaries",
                "n": n,
                "kib": a.nbytes / 1024,
                "peak_bytes": peak,
                "bytes_per_element": peak / n,
            }
        )
    return rows


def nep50_rows(n: int = 100_000) -> list[dict[str, Any]]:
    """A float32 array scaled in place by a numpy float64 scalar (NEP 50: the scalar keeps its
    type, so numpy computes through a float64 temporary) vs by a Python float (no temporary)."""
    a = np.ones(n, np.float32)
    scale64, scale = np.float64(0.5), 0.5
    cases = {
        "a *= np.float64(0.5)": lambda: np.multiply(
            a, scale64, out=a, casting="same_kind"
        ),
        "a *= 0.5": lambda: np.multiply(a, scale, out=a),
    }
    timings = bench.measure_interleaved(cases, repeats=7, min_time=0.01)
    return [
        {
            "kind": "nep50",
            "expression": name,
            "n": n,
            "array_bytes": a.nbytes,
            "peak_bytes": bench.peak_allocation(fn),
            **timings[name].as_row(),
        }
        for name, fn in cases.items()
    ]


def decay_trajectories(
    steps: int = 200, lr: float = 0.01, weight_decays: tuple[float, ...] = (0.01, 0.1)
) -> dict[str, list[float]]:
    """A weight that starts at 1 and whose loss gradient is 0, so only weight decay moves it.

    Adam with an L2 term feeds wd * w into the gradient, which Adam then divides by its own
    running scale: the step is about lr whatever wd is. AdamW shrinks the weight by lr * wd
    each step, apart from the gradient: its decay is proportional to wd.
    """
    out = {}
    for wd in weight_decays:
        for kind in ("Adam", "AdamW"):
            p = optim.Parameter(np.ones(1))
            opt = getattr(optim, kind)([p], lr=lr, weight_decay=wd, impl="inplace")
            path = [1.0]
            for _ in range(steps):
                p.grad[...] = 0.0
                opt.step()
                path.append(float(p.data[0]))
            out[f"{kind}, weight_decay {wd}"] = path
    return out


def suite_optim(options: bench.SuiteOptions) -> list[dict[str, Any]]:
    """The AdamW ladder at microgpt's size and at a ~3 M parameter GPT: time per step, bytes
    allocated per step, GB/s against the measured bandwidth, and the parity with torch.optim.

    Options: repeats; quick: 3 repeats, a smaller large model.
    """
    large = (
        LARGE
        if not options.quick
        else GPTConfig(vocab_size=27, n_layer=1, n_embd=128, n_head=4, block_size=32)
    )
    bandwidth = machine.measure_bandwidth(repeats=3 if options.quick else 5)
    rows = [
        {
            "kind": "bandwidth",
            "gbytes_per_s": bandwidth["gbytes_per_s"],
            "median_gbytes_per_s": bandwidth["median_gbytes_per_s"],
            "threads": bandwidth["threads"],
            "bytes": bandwidth["bytes"],
        }
    ]
    for config, scalar in ((MICROGPT, True), (large, False)):
        rows += ladder_rows(
            config,
            repeats=options.rounds,
            scalar=scalar,
            bandwidth_gbs=bandwidth["median_gbytes_per_s"],  # medians on both sides
        )
    for kind in ("SGD", "Adam", "AdamW"):
        settings = (
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}
            if kind == "SGD"
            else SETTINGS
        )
        for impl in optim.IMPLS:
            rows.append(
                {
                    "kind": "parity",
                    "optimizer": kind,
                    "impl": impl,
                    "steps": 100,
                    "max_relative_difference": parity_with_torch(
                        kind, impl, 100, settings
                    ),
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# exercises: each checker runs the reader's code against the library and says what is wrong


def reference_sgd_momentum_step(
    p: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float, momentum: float
) -> None:
    """The exercise's answer: buf = momentum * buf + g; p -= lr * buf, in place, no temporaries."""
    np.multiply(buf, momentum, out=buf)
    np.add(buf, g, out=buf)
    np.multiply(buf, -lr, out=g)  # g is free to reuse once it is folded into buf
    np.add(p, g, out=p)


def check_sgd_momentum_step(
    step: Callable[..., Any], n: int = 50_000, steps: int = 5
) -> str:
    """The reader's step(p, g, buf, lr, momentum) must equal torch.optim.SGD(momentum=...) (after
    its first step) to 1e-12 and allocate no array (peak growth under 1 KiB)."""
    rng = np.random.default_rng(0)
    p, buf = rng.standard_normal(n), rng.standard_normal(n)
    reference_p, reference_buf = p.copy(), buf.copy()
    for _ in range(steps):
        g = rng.standard_normal(n)
        step(p, g.copy(), buf, 0.1, 0.9)
        reference_buf = 0.9 * reference_buf + g
        reference_p = reference_p - 0.1 * reference_buf
    if not np.allclose(buf, reference_buf, rtol=1e-12, atol=1e-12):
        raise AssertionError(
            "the momentum buffer is wrong: it should become momentum * buf + g"
        )
    if not np.allclose(p, reference_p, rtol=1e-12, atol=1e-12):
        raise AssertionError(
            "the weights are wrong: p should move by -lr * buf (the new buffer)"
        )
    g = rng.standard_normal(n)
    peak = bench.peak_allocation(lambda: step(p, g, buf, 0.1, 0.9))
    if peak >= 1024:
        raise AssertionError(
            f"one step held {peak:,} bytes at its peak: an expression made a "
            "temporary array; use out= (or a numba loop)"
        )
    return f"correct, and allocation-free ({peak} bytes at the peak of a step)"


def reference_warmup_cosine(
    step: int, lr: float, warmup: int, decay_steps: int, min_lr: float
) -> float:
    """The exercise's answer (the formula of optim.warmup_cosine_lr)."""
    import math

    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay_steps:
        return min_lr
    ratio = (step - warmup) / (decay_steps - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr - min_lr)


def check_warmup_cosine(schedule: Callable[[int, float, int, int, float], float]) -> str:
    """The reader's schedule(step, lr, warmup, decay_steps, min_lr) must equal nanoGPT's get_lr
    (optim.warmup_cosine_lr) at every step of a run, warm-up and tail included."""
    for lr, warmup, decay, low in ((1e-3, 10, 100, 1e-4), (6e-4, 0, 50, 0.0)):
        expected = optim.warmup_cosine_lr(lr, warmup, decay, low)
        for step in range(decay + 20):
            got = schedule(step, lr, warmup, decay, low)
            if not abs(got - expected(step)) <= 1e-12 * lr:
                raise AssertionError(
                    f"at step {step} (lr={lr}, warmup={warmup}, "
                    f"decay_steps={decay}, min_lr={low}) the schedule gives "
                    f"{got!r}, expected {expected(step)!r}"
                )
    return "matches optim.warmup_cosine_lr at every step"


def reference_adam_bytes(n: int, itemsize: int) -> int:
    """The exercise's answer: read p, g, m, v and write p, m, v."""
    return 7 * n * itemsize


def check_adam_bytes(bytes_moved: Callable[[int, int], int]) -> str:
    """The reader's bytes_moved(n, itemsize): the fewest bytes one Adam step must read and write
    for n parameters of itemsize bytes (what gbytes_per_s in ladder_rows divides by)."""
    for n, itemsize in ((4192, 8), (1_000_000, 4), (1, 2)):
        expected = 7 * n * itemsize  # read p, g, m, v; write p, m, v
        got = bytes_moved(n, itemsize)
        if got != expected:
            hint = (
                "count every array read and every array written: the gradient is read "
                "once, the weights and both moments are read and written"
            )
            raise AssertionError(
                f"for n={n}, itemsize={itemsize}: got {got}, expected {expected}; {hint}"
            )
    return "right: 7 arrays' worth of traffic per step"
