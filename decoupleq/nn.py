"""``QuantLinear``: a linear layer with packed integer codes and trainable float scale/zero."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from decoupleq.kernels import BACKENDS, dequant_matmul, dequantize
from decoupleq.kernels.packing import bit_planes, pack, packed_rows
from decoupleq.kernels.reference import num_groups


class BitsAndGroup(Protocol):
    """Anything with ``bits`` and ``group_size`` (e.g. ``decoupleq.config.QuantConfig``)."""

    bits: int
    group_size: int


def _group_major_parameter(rows: int, cols: int, **factory) -> nn.Parameter:
    """An (rows, cols) parameter laid out column-major: the kernels read a group's N values contiguously."""
    return nn.Parameter(torch.zeros(cols, rows, **factory).t())


class QuantLinear(nn.Module):
    """Weight-only quantized linear layer, ``y = x @ (scale * q + zero)^T + bias``.

    Buffers: ``packed`` int32 (K_pad * bits / 32, N) codes (see :mod:`decoupleq.kernels.packing`).
    Parameters (trainable, the "float parts"): ``scale`` and ``zero`` (N, G) with G = ceil(K / group_size)
    (1 for per channel), stored column-major so that the kernels load a group's N values contiguously;
    optional ``bias`` (N,).

    Args:
        in_features: K.
        out_features: N.
        bits: 2, 3, 4 or 8.
        group_size: group length along K, or -1 for one group per output row.
        bias: whether the layer has a bias.
        backend: "auto", "triton" or "torch" (see :func:`decoupleq.kernels.dequant_matmul`).
        device, dtype: of the float parameters.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int,
        bias: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        bit_planes(bits)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.backend = bits, group_size, backend
        groups = num_groups(in_features, group_size)
        rows = packed_rows(in_features, bits)
        self.register_buffer("packed", torch.zeros(rows, out_features, dtype=torch.int32, device=device))
        self.scale = _group_major_parameter(out_features, groups, device=device, dtype=dtype)
        self.zero = _group_major_parameter(out_features, groups, device=device, dtype=dtype)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        q: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        config: BitsAndGroup | tuple[int, int],
        backend: str = "auto",
    ) -> QuantLinear:
        """Build from a float linear layer and its solved quantization.

        Args:
            linear: the layer being replaced (gives shapes, bias, device and float dtype).
            q: signed integer codes (N, K).
            scale, zero: (N, G).
            config: a ``QuantConfig`` (anything with ``bits`` and ``group_size``) or ``(bits, group_size)``.
            backend: forward backend.
        """
        bits, group_size = config if isinstance(config, tuple) else (config.bits, config.group_size)
        n, k = linear.out_features, linear.in_features
        if tuple(q.shape) != (n, k):
            raise ValueError(f"q must have the linear's weight shape {(n, k)}, got {tuple(q.shape)}")
        weight = linear.weight
        layer = cls(k, n, bits, group_size, linear.bias is not None, backend, weight.device, weight.dtype)
        for name, t in (("scale", scale), ("zero", zero)):
            if tuple(t.shape) != tuple(layer.scale.shape):
                expected = tuple(layer.scale.shape)
                raise ValueError(f"{name} must have shape {expected} (N, G), got {tuple(t.shape)}")
        with torch.no_grad():
            layer.packed.copy_(pack(q.to(weight.device), bits))
            layer.scale.copy_(scale)
            layer.zero.copy_(zero)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def dequantized_weight(self) -> torch.Tensor:
        """Fake-quantized weight ``scale * q + zero`` (N, K) in the parameters' dtype (differentiable)."""
        w = dequantize(self.packed, self.scale, self.zero, self.bits, self.group_size, self.in_features)
        return w.to(self.scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., N) in x's dtype."""
        return dequant_matmul(
            x, self.packed, self.scale, self.zero, self.bits, self.group_size, self.bias, self.backend
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, bias={self.bias is not None}, backend={self.backend!r}"
        )
