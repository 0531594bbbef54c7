"""Where an encoder runs and in which precision: `--device auto|cpu|cuda|cuda:N`, `--precision fp32|bf16`.

A device that is asked for by name and is not there is an error, never a silent fall back to the CPU: an
archive meant for a GPU would otherwise be indexed ~1000x slower without a word. The name is checked before
torch is imported, and the device before any model is loaded."""

from __future__ import annotations

import re

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16")
# Tiles per forward pass when --batch-size is not given: what fills a GPU, and what a CPU has always used.
DEFAULT_BATCH_SIZE = {"cuda": 256, "cpu": 32}

_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device or precision that cannot be had on this machine, or is not one msearch knows."""


def parse_device(name: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1); 'auto' -> ('auto', None). Only the syntax: no torch, no hardware."""
    match = _DEVICE_NAME.match(name.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"--device must be {DEVICE_CHOICES}, got {name!r}")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def resolve_device(name: str = "auto"):
    """The torch.device for a --device value: 'auto' is the first CUDA device torch sees, else the CPU;
    'cuda' or 'cuda:N' where there is no such device is a DeviceError that says what torch sees."""
    kind, number = parse_device(name)
    import torch

    if kind == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "auto":
        return torch.device("cuda", 0) if count else torch.device("cpu")
    number = 0 if number is None else number
    if count == 0:
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "torch sees no CUDA device"
        raise DeviceError(
            f"--device {name}: {why} (CUDA_VISIBLE_DEVICES={_visible_devices()}); "
            f"use --device cpu, or --device auto to take a GPU only where there is one"
        )
    if number >= count:
        raise DeviceError(f"--device {name}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", number)


def resolve_precision(precision: str | None, device) -> str:
    """bf16 on CUDA, fp32 on the CPU unless asked otherwise (bf16 autocast is slower than fp32 on most CPUs,
    and is offered there so that the bf16 path and its check can run anywhere)."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    return parse_precision(precision)


def parse_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise DeviceError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def default_batch_size(device) -> int:
    return DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cpu"])


def describe_device(device) -> str:
    """'cuda:0 (NVIDIA H200)' or 'cpu': what a run summary and `msearch info` print."""
    if device.type != "cuda":
        return str(device)
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})"


def _visible_devices() -> str:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
