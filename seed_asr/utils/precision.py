"""``trainer.precision: auto``: bf16 mixed precision where the hardware runs it fast, else fp32.

bf16 autocast is ~1.5x faster per core on CPUs with AVX-512 BF16 or AMX and ~10x slower on CPUs
without them (their bf16 matmuls are emulated), so the choice follows the CPU's feature flags.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # either runs bf16 matmuls natively
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The fields of the first processor in ``path`` (e.g. ``model name``, ``flags``); empty when
    the file does not exist (not Linux)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def auto_precision(accelerator: str, cpu_flags: Collection[str] | None = None) -> tuple[str, str]:
    """The Lightning precision for ``accelerator`` and why.

    Args:
        accelerator: the trainer's accelerator: on "auto", "gpu" or "cuda" with CUDA available the GPU
            decides (bf16 natively, not emulated), elsewhere the CPU's flags.
        cpu_flags: the CPU's feature flags (default: those of /proc/cpuinfo).

    Returns:
        ("bf16-mixed" or "32-true", a reason for the run log).
    """
    if accelerator in GPU_ACCELERATORS and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed", f"{name} supports bf16"
        return "32-true", f"{name} has no native bf16"
    if accelerator not in ("auto", "cpu"):
        return "32-true", f"no bf16 check for accelerator {accelerator!r}"
    flags = set(cpu_flags if cpu_flags is not None else read_cpuinfo().get("flags", "").split())
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if found:
        return "bf16-mixed", f"CPU has {' and '.join(found)}"
    return "32-true", f"CPU has none of {', '.join(BF16_CPU_FLAGS)}"
