"""Devices for torch: CUDA, Apple's MPS or the CPU, behind one small API.

    pick_device(name=None)      CUDA, then MPS, then CPU; or the one asked for (argument, else the
                                setting MICROGPT_DEVICE); a clear error if it is absent
    available_devices()         the device kinds this torch can use on this machine
    synchronize(device)         wait for queued work: GPU calls return before the work is done
    sync_for(device)            the sync callable for bench.measure (None on the CPU)
    event_timing(fn, device)    time fn with the GPU's own clock (CUDA and MPS events)
    memory_stats(device)        bytes held by torch's caching allocator (CUDA, MPS; {} on the CPU)
    empty_cache(device)         hand cached blocks back to the driver
    supported_dtypes(device)    the dtypes a device computes in (MPS: no float64)
    torch_dtype(name, device)   'bfloat16' -> torch.bfloat16, checked against the device
    supports_tf32(device)       CUDA compute capability >= 8.0 (Ampere and later)
    tf32_matmul()               context manager: float32 matmuls run on TF32 tensor cores
    describe(device)            name, memory, capability: the provenance of a GPU result
    cpu_matmul_features()       the CPU's instructions for narrow-float matmuls (AVX512_BF16, AMX)

Chapter 07's measurements of these (copies, sync, launches, precision, memory) are in device_lab.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, Iterator

import torch

from . import bench, machine

DEVICE_ENV = "MICROGPT_DEVICE"  # declared, with every other setting, in machine.SETTINGS
PREFERENCE = ("cuda", "mps", "cpu")  # pick_device's order when nothing is asked for
DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class DeviceUnavailableError(RuntimeError):
    """A device was asked for (argument or MICROGPT_DEVICE) that this machine or torch lacks."""


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
            return (
                f"this torch ({torch.__version__}) was built without CUDA; install a CUDA build "
                "(see https://pytorch.org/get-started/locally/) on a machine with an NVIDIA GPU"
            )
        return (
            f"torch was built with CUDA {torch.version.cuda} but finds no GPU "
            "(no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides every GPU)"
        )
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
        raise TypeError(
            f"device must be a str or torch.device, got {type(name).__name__}"
        )
    if device is None or device.type not in PREFERENCE:
        raise ValueError(
            f"device must be 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'; got {name!r}"
        )
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
        name = machine.setting(DEVICE_ENV)
        source = f"the environment variable {DEVICE_ENV}"
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device(available_devices()[0])
    device = parse_device(name)
    if not is_available(device.type):
        raise DeviceUnavailableError(
            f"{source} asks for device {str(name)!r}, but {why_unavailable(device.type)}. "
            f"Available here: {', '.join(available_devices())}. Use 'auto' (or unset {DEVICE_ENV}) "
            "to take the best available one."
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise DeviceUnavailableError(
            f"{source} asks for {str(device)!r}, but torch sees only "
            f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)"
        )
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
    """Whether torch keeps allocator statistics for the device (CUDA and MPS do, the CPU not)."""
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
        return {
            "allocated": torch.cuda.memory_allocated(device),
            "reserved": torch.cuda.memory_reserved(device),
            "peak_allocated": torch.cuda.max_memory_allocated(device),
            "free": free,
            "total": total,
        }
    if device.type == "mps":
        return {
            "allocated": torch.mps.current_allocated_memory(),
            "reserved": torch.mps.driver_allocated_memory(),
            "recommended_max": torch.mps.recommended_max_memory(),
        }
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
        return (
            ["float64", "float32"]
            + (["bfloat16"] if torch.cuda.is_bf16_supported() else [])
            + ["float16"]
        )
    macos_14 = getattr(
        torch.backends.mps, "is_macos_or_newer", lambda major, minor: False
    )(14, 0)
    return ["float32"] + (["bfloat16"] if macos_14 else []) + ["float16"]


def torch_dtype(
    name: str | torch.dtype, device: str | torch.device = "cpu"
) -> torch.dtype:
    """'float32' -> torch.float32, raising TypeError if the device cannot compute in it."""
    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    device = parse_device(device)
    supported = supported_dtypes(device)
    if name not in supported:
        why = (
            " (Apple's Metal GPUs have no 64-bit floats)"
            if device.type == "mps" and name == "float64"
            else ""
        )
        raise TypeError(
            f"{name} is not supported on {device.type}{why}; it supports {', '.join(supported)}"
        )
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
    except (
        AttributeError,
        RuntimeError,
    ):  # older torch, or the program already used the old flags
        previous, attribute, value = matmul.allow_tf32, "allow_tf32", True
    setattr(matmul, attribute, value)
    try:
        yield
    finally:
        setattr(matmul, attribute, previous)


def describe(device: str | torch.device) -> dict[str, Any]:
    """What a GPU result needs for provenance: the device's name, memory, capability, versions."""
    device = parse_device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "kind": device.type,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            total_memory=props.total_memory,
            capability=".".join(map(str, (props.major, props.minor))),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
    elif device.type == "mps":
        import platform

        info.update(
            name=f"Apple GPU (MPS, {machine.cpu_info().get('model')})",
            macos=platform.mac_ver()[0],
            recommended_max_memory=torch.mps.recommended_max_memory(),
        )
    else:
        info.update(name=machine.cpu_info().get("model"), threads=torch.get_num_threads())
    return info


def event_timing(
    fn: Callable[[], Any], device: torch.device, repeats: int = 7
) -> bench.Timing:
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


def cpu_matmul_features() -> dict[str, Any]:
    """What this CPU gives torch for matmuls in narrow formats, as torch itself detects it.

    simd          the SIMD flags the operating system reports (machine.cpu_info)
    capability    the widest vector kernels torch's CPU build dispatches to ('AVX512', ...)
    avx512_bf16   AVX512_BF16's dot-product instruction vdpbf16ps: each 32-bit lane multiplies
                  a pair of bfloat16 numbers and adds both products to one float32 sum, so one
                  instruction does 2 products per float32 lane
    amx_bf16      Intel AMX (Sapphire Rapids and later): a matrix unit beside each core that
                  multiplies tiles of bfloat16 in one instruction; oneDNN, which torch calls for
                  CPU bfloat16 matmuls, uses it where present (torch checks for AMX tiles;
                  every CPU that has them has the bfloat16 ones)
    amx_fp16      the same for float16 (Granite Rapids and later)
    None where this torch cannot tell (its private torch.cpu checks are missing).
    """

    def check(name: str) -> bool | None:
        found = getattr(torch.cpu, f"_is_{name}_supported", None)
        return bool(found()) if found is not None else None

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "simd": machine.cpu_info().get("simd", []),
        "capability": capability,
        "avx512_bf16": check("avx512_bf16"),
        "amx_bf16": check("amx_tile"),
        "amx_fp16": check("amx_fp16"),
    }
