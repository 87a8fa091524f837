"""Devices, their names, randomness that is the same on every machine, and honest timing."""

from __future__ import annotations

import contextlib
import logging
import platform
import random
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

# importing PyTorch's benchmark timer logs a warning about CUDA on every machine without it: silenced for the import
_cpp_log = logging.getLogger("torch.utils.cpp_extension")
_level = _cpp_log.level
_cpp_log.setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

_cpp_log.setLevel(_level)

__all__ = [
    "resolve_device",
    "device_name",
    "cpu_has_native_bf16",
    "synchronize",
    "median_seconds",
    "seed_everything",
    "randn",
]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA device is available; use 'auto' or 'cpu'")
    return dev


def device_name(device: str | torch.device) -> str:
    """A human-readable name of the device: the GPU model, or the CPU model and thread count.

    A virtual machine may name different CPUs alike ("AMD EPYC"), so the CPU's family and model numbers, where
    Linux gives them, tell one generation from another (their speeds can differ twofold).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    name = info.get("model name") or platform.processor() or platform.machine()
    generation = f"family {info['cpu family']}, model {info['model']}; " if "cpu family" in info and "model" in info else ""
    return f"{name} ({generation}{torch.get_num_threads()} threads)"


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX), so bf16 autocast pays off."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or unusual build: assume not
        return False


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read afterwards measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], min_run_time: float = 1.0) -> float:
    """Median seconds of one call of ``fn()``, by PyTorch's benchmark timer (warm-up, blocks of calls, the device
    synchronised) with this process's threads, measuring for at least ``min_run_time`` seconds."""
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def randn(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``.

    Drawing on the generator's device makes a seeded draw identical on every machine
    when the generator lives on the CPU.
    """
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)
