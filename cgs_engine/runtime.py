"""Where and how tensors run: device choice, bf16 support, thread count, autocast."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from cgs_engine.errors import CGSError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


class RuntimeUnavailable(CGSError, ValueError):
    """The device or precision asked for does not exist on this machine (one line for the user)."""


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them bf16 autocast is emulated and slower than fp32, so "auto" picks fp32 there.
    """
    try:
        with open("/proc/cpuinfo") as stream:
            flags = next((line for line in stream if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    channels_last: bool = True

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def describe(self) -> str:
        precision = "bf16 autocast" if self.bf16 else "fp32"
        layout = ", channels-last" if self.channels_last else ""
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return f"{self.device.type} ({precision}{layout}{threads})"


def resolve_runtime(
    device: str = "auto", precision: str = "auto", threads: int = 0, channels_last: bool = True
) -> Runtime:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeUnavailable("device 'cuda' asked for, but no CUDA GPU is available; use --device cpu")
    chosen = torch.device(
        "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if chosen.type == "cpu":
        torch.set_num_threads(threads if threads > 0 else usable_cores())
        supported = cpu_has_bf16()
    else:
        supported = torch.cuda.is_bf16_supported()
    if precision == "bf16" and not supported and chosen.type == "cuda":
        raise RuntimeUnavailable("bf16 asked for, but this GPU does not support it; use fp32")
    bf16 = precision == "bf16" or (precision == "auto" and supported)
    return Runtime(device=chosen, bf16=bf16, channels_last=channels_last)
