"""A quantized speech LLM on disk: a folder that ``seed-asr eval`` / ``transcribe`` can load on its own.

```
<dir>/model.safetensors   packed codes, scales, zeros and every float tensor (decoupleq.checkpoint)
<dir>/speech_llm.json     {"format": "seed-asr-quantized", "format_version": 1, "cfg": the training
                          config (its `model` node rebuilds the float skeleton), "tokenizer_files",
                          "cmvn", "quant": the QuantSpec}
<dir>/quant_report.json   per-layer errors, block-wise losses, times, sizes (optional, for people)
```
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from decoupleq.checkpoint import save_quantized
from seed_asr.artifacts.serialization import tokenizer_to_files
from seed_asr.utils.checkpoints import CMVN_KEY, TOKENIZER_KEY

WEIGHTS = "model.safetensors"
META = "speech_llm.json"
REPORT = "quant_report.json"
FORMAT = "seed-asr-quantized"
FORMAT_VERSION = 1


def is_quantized_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_quantized_speech_llm`."""
    path = Path(path)
    return path.is_dir() and (path / WEIGHTS).is_file() and (path / META).is_file()


def save_quantized_speech_llm(model: nn.Module, out_dir: str | Path, cfg: dict[str, Any],
                              tokenizer: PreTrainedTokenizerBase, cmvn: dict[str, list[float]],
                              quant: dict[str, Any], dtype: torch.dtype = torch.float16) -> Path:
    """Write a quantized ``SpeechLLM`` and everything needed to rebuild it.

    Args:
        model: the speech LLM with ``QuantLinear`` layers.
        out_dir: the folder (created).
        cfg: the training config as plain containers (its ``model`` node builds the skeleton).
        tokenizer: the model's tokenizer.
        cmvn: ``seed_asr.lit.tokenizers.cmvn_to_dict`` of the feature normalisation.
        quant: ``QuantSpec.to_dict()``.
        dtype: storage dtype of every float tensor (scales, zeros, embeddings, norms, ...); the model
            itself is left as it is.

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_quantized(copy.deepcopy(model).to(dtype), out / WEIGHTS)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "cfg": cfg,
            TOKENIZER_KEY: tokenizer_to_files(tokenizer), CMVN_KEY: cmvn, "quant": quant}
    (out / META).write_text(json.dumps(meta, ensure_ascii=False))
    return out


def write_report(out_dir: str | Path, report: dict[str, Any]) -> None:
    """Write ``quant_report.json`` (per-layer errors, times, sizes) into a quantized folder."""
    (Path(out_dir) / REPORT).write_text(json.dumps(report, indent=2))


def read_report(out_dir: str | Path) -> dict[str, Any]:
    """The ``quant_report.json`` of a quantized folder."""
    return json.loads((Path(out_dir) / REPORT).read_text())


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``speech_llm.json`` of a quantized folder, checked for format and version."""
    meta = json.loads((Path(path) / META).read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}/{META}: not a {FORMAT} v{FORMAT_VERSION} folder "
                         f"(format {meta.get('format')!r}, version {meta.get('format_version')!r})")
    missing = [k for k in ("cfg", TOKENIZER_KEY, CMVN_KEY, "quant") if k not in meta]
    if missing:
        raise ValueError(f"{path}/{META} lacks {missing}")
    return meta


def size_report(float_numel: dict[str, int], path: str | Path) -> dict[str, float]:
    """Size of the quantized file against the same model's float weights at 32 and 16 bits.

    Args:
        float_numel: element count of every tensor of the float model's state dict; the float sizes
            count them at 4 / 2 bytes (what an fp32 / fp16 safetensors file holds, headers aside).
        path: the quantized folder.
    """
    numel = sum(float_numel.values())
    quant = (Path(path) / WEIGHTS).stat().st_size
    return {"quantized_bytes": quant, "fp32_bytes": 4 * numel, "fp16_bytes": 2 * numel,
            "ratio_vs_fp16": quant / (2 * numel), "ratio_vs_fp32": quant / (4 * numel)}
