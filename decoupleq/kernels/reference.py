"""Plain-torch dequantize-and-matmul: the specification every kernel is tested against.

Semantics: ``W_hat = scale * q + zero`` is computed in float32 (N, K) from the packed codes, cast to
the activation dtype, and ``y = x @ W_hat^T + bias`` is one ``torch.nn.functional.linear`` in that
dtype (float32 accumulation on GPUs for fp16/bf16). The result has x's dtype. Everything here is
differentiable with respect to ``x``, ``scales``, ``zeros`` and ``bias`` (never the codes).
"""

from __future__ import annotations

import torch

from decoupleq.kernels.packing import bit_planes, packed_rows, unpack


def num_groups(k: int, group_size: int) -> int:
    """Number of groups along K (``group_size == -1``: one group per row)."""
    if group_size == -1:
        return 1
    if group_size <= 0:
        raise ValueError(f"group_size must be positive or -1, got {group_size}")
    return -(-k // group_size)


def validate_operands(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> None:
    """Raise ``ValueError`` naming the first operand whose dtype or shape is inconsistent."""
    bit_planes(bits)
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got {x.dtype}")
    k = x.shape[-1]
    if packed.dtype != torch.int32 or packed.dim() != 2 or packed.shape[0] != packed_rows(k, bits):
        raise ValueError(
            f"packed must be int32 ({packed_rows(k, bits)}, N) for K={k} at {bits} bits, "
            f"got {packed.dtype} {tuple(packed.shape)}"
        )
    expected = (packed.shape[1], num_groups(k, group_size))
    for name, t in (("scales", scales), ("zeros", zeros)):
        if tuple(t.shape) != expected or not t.dtype.is_floating_point:
            raise ValueError(
                f"{name} must be floating point {expected} (N, G), got {t.dtype} {tuple(t.shape)}"
            )
    if bias is not None and tuple(bias.shape) != (packed.shape[1],):
        raise ValueError(f"bias must have shape ({packed.shape[1]},), got {tuple(bias.shape)}")


def expand_groups(t: torch.Tensor, k: int, group_size: int) -> torch.Tensor:
    """Broadcast per-group values (N, G) to per-weight values (N, K)."""
    if group_size == -1:
        return t.expand(t.shape[0], k)
    return t.repeat_interleave(group_size, dim=1)[:, :k]


def reduce_groups(t: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum per-weight values (N, K) over each group: (N, G). Inverse shape of :func:`expand_groups`."""
    n, k = t.shape
    if group_size == -1:
        return t.sum(dim=1, keepdim=True)
    g = num_groups(k, group_size)
    return torch.nn.functional.pad(t, (0, g * group_size - k)).view(n, g, group_size).sum(dim=-1)


def dequantize(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int, k: int
) -> torch.Tensor:
    """Fake-quantized weight ``W_hat = scale * q + zero``.

    Args:
        packed: int32 (K_pad * bits / 32, N) codes from :func:`decoupleq.kernels.packing.pack`.
        scales, zeros: (N, G) floats.
        bits, group_size: quantization grid; group_size -1 means per channel.
        k: number of input features K.

    Returns:
        float32 (N, K).
    """
    q = unpack(packed, bits, k).to(torch.float32)
    s = expand_groups(scales.to(torch.float32), k, group_size)
    z = expand_groups(zeros.to(torch.float32), k, group_size)
    return torch.addcmul(z, s, q)


def dequant_matmul_reference(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y = x @ (scale * q + zero)^T + bias``.

    Args:
        x: activations (..., K), fp16 / bf16 / fp32.
        packed: int32 (K_pad * bits / 32, N).
        scales, zeros: (N, G).
        bits, group_size: quantization grid (group_size -1: per channel).
        bias: optional (N,).

    Returns:
        (..., N) in x's dtype.
    """
    validate_operands(x, packed, scales, zeros, bits, group_size, bias)
    w = dequantize(packed, scales, zeros, bits, group_size, x.shape[-1]).to(x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))
