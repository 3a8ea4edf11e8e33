"""Quantizers from other projects, as optional peers of `bench_quant.py` on the same model and data.

- HQQ (PyPI `hqq`, calibration-free half-quadratic quantization), run in this process when installed.
- llmcompressor's GPTQ (`oneshot` with a `GPTQModifier`), which pins its own transformers: it runs in
  another Python environment (`--llmcompressor-python`, e.g. the one `make peers-env` builds) through
  `peer_llmcompressor.py`; the model goes there as a `save_pretrained` folder, the calibration windows
  and the quantized weights travel as safetensors.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PEER_SCRIPT = Path(__file__).with_name("peer_llmcompressor.py")


def hqq_available() -> bool:
    """Whether the `hqq` package can be imported here."""
    return importlib.util.find_spec("hqq") is not None


def hqq_weight(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """HQQ's fake-quantized W_hat (N, K): groups of `group` input columns (-1: the whole row), the
    library's default optimisation of the zero points, float32."""
    from hqq.core.quantize import Quantizer

    k = w.shape[1]
    codes, meta = Quantizer.quantize(w.float(), nbits=bits, channel_wise=True,
                                     group_size=k if group == -1 else group, optimize=True, axis=1,
                                     bitpack=False, compute_dtype=torch.float32, device=str(w.device))
    return Quantizer.dequantize(codes, meta).reshape(w.shape).to(w.dtype)


def hqq_model_weights(layers: nn.Module, prefix: str, bits: int, group: int) -> dict[str, torch.Tensor]:
    """HQQ weights of every nn.Linear under `layers`, keyed by their state-dict names under `prefix`."""
    return {f"{prefix}.{name}.weight": hqq_weight(m.weight.detach(), bits, group)
            for name, m in layers.named_modules() if isinstance(m, nn.Linear)}


def llmcompressor_weights(python: str, model: nn.Module, batches: list[dict], bits: int, group: int,
                          work_dir: Path) -> tuple[dict[str, torch.Tensor], float]:
    """llmcompressor GPTQ (asymmetric, act-order with static groups, damping 0.01, block 128) of the
    decoder layers' linears, run by `python`; returns their fake-quantized weights and the seconds the
    other process took (model loading included)."""
    model_dir, calib = work_dir / "model", work_dir / "calibration.safetensors"
    if not model_dir.exists():
        model.save_pretrained(model_dir)
    save_file({"input_ids": torch.cat([b["input_ids"] for b in batches]).cpu().contiguous(),
               "attention_mask": torch.cat([b["attention_mask"] for b in batches]).cpu().contiguous()}, calib)
    out = work_dir / f"llmcompressor_w{bits}_g{group}.safetensors"
    start = time.perf_counter()
    subprocess.run([python, str(PEER_SCRIPT), "--model", str(model_dir), "--calibration", str(calib),
                    "--bits", str(bits), "--group", str(group), "--out", str(out)], check=True,
                   stdout=sys.stdout, stderr=sys.stderr)
    return load_file(out), time.perf_counter() - start
