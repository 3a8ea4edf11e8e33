"""On-disk format of a quantized model: one safetensors file.

The file holds the whole ``state_dict``: for every :class:`~decoupleq.nn.QuantLinear` its packed int32
codes (``<layer>.packed``, layout in :mod:`decoupleq.kernels.packing`), ``<layer>.scale`` / ``<layer>.zero``
(N, G) and optional ``<layer>.bias`` in the module's float dtype (fp16/bf16 once the model is cast),
and every remaining full-precision tensor. The safetensors header metadata key ``"decoupleq"`` holds a
JSON document ``{"format_version": 1, "layers": {name: {"in_features", "out_features", "bits",
"group_size", "bias"}}}`` naming the layers to rebuild as ``QuantLinear``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from decoupleq.nn import QuantLinear

FORMAT_VERSION = 1
METADATA_KEY = "decoupleq"


def quantized_layers(model: nn.Module) -> dict[str, dict]:
    """Quantization config of every ``QuantLinear`` in ``model``, by module name."""
    return {
        name: {"in_features": m.in_features, "out_features": m.out_features, "bits": m.bits,
               "group_size": m.group_size, "bias": m.bias is not None}  # fmt: skip
        for name, m in model.named_modules()
        if isinstance(m, QuantLinear)
    }


def save_quantized(model: nn.Module, path: str | Path) -> None:
    """Write ``model`` (with its ``QuantLinear`` layers) to one safetensors file at ``path``."""
    header = {"format_version": FORMAT_VERSION, "layers": quantized_layers(model)}
    save_model(model, str(path), metadata={METADATA_KEY: json.dumps(header)}, force_contiguous=True)


def read_header(path: str | Path) -> dict:
    """The decoupleQ JSON header of a file written by :func:`save_quantized`."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: not written by save_quantized")
    header = json.loads(metadata[METADATA_KEY])
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {header.get('format_version')}")
    return header


def load_quantized(model: nn.Module, path: str | Path, backend: str = "auto") -> nn.Module:
    """Load a file written by :func:`save_quantized` into a float skeleton of the same model.

    The ``nn.Linear`` layers named in the file are replaced in place by ``QuantLinear`` (on the
    linear's device, with the stored scale dtype); then every tensor is loaded strictly.

    Args:
        model: the unquantized model architecture (weights may be random).
        path: the safetensors file.
        backend: forward backend of the new ``QuantLinear`` layers.

    Returns:
        ``model``, modified in place.
    """
    layers = read_header(path)["layers"]
    with safe_open(str(path), framework="pt") as f:
        scale_dtypes = {name: f.get_slice(f"{name}.scale").get_dtype() for name in layers}
    dtypes = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
    for name, cfg in layers.items():
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear) or (linear.in_features, linear.out_features) != (
            cfg["in_features"], cfg["out_features"]
        ):  # fmt: skip
            raise ValueError(f"{name}: expected nn.Linear({cfg['in_features']}, {cfg['out_features']}), "
                             f"found {linear}")  # fmt: skip
        dtype = dtypes[scale_dtypes[name]]
        layer = QuantLinear(cfg["in_features"], cfg["out_features"], cfg["bits"], cfg["group_size"],
                            cfg["bias"], backend, linear.weight.device, dtype)  # fmt: skip
        model.set_submodule(name, layer)
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    return model
