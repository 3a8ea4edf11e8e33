"""``dequant_matmul``: y = x @ (scale * q + zero)^T + bias with a backend switch.

``backend="torch"`` runs :func:`~decoupleq.kernels.reference.dequant_matmul_reference`;
``backend="triton"`` runs the Triton kernels of :mod:`decoupleq.kernels.triton` (on a GPU, or on the CPU
under ``TRITON_INTERPRET=1``); ``"auto"`` picks Triton for GPU tensors when Triton is installed, the
torch reference otherwise. Both go through the ``decoupleq::dequant_matmul`` custom op, which has a
fake (meta) implementation for ``torch.compile`` and an autograd formula for ``x``, ``scales``,
``zeros`` and ``bias`` (the integer codes get no gradient).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from decoupleq.kernels.packing import unpack
from decoupleq.kernels.reference import (
    dequant_matmul_reference,
    dequantize,
    reduce_groups,
    validate_operands,
)

__all__ = ["BACKENDS", "dequant_matmul", "dequant_matmul_reference", "dequantize", "resolve_backend"]

BACKENDS = ("auto", "triton", "torch")


def triton_can_run(device: torch.device) -> bool:
    """Whether the Triton kernels can run on tensors of ``device``.

    True for CUDA devices with Triton installed, and for any device when the Triton interpreter is
    switched on (``TRITON_INTERPRET=1``, read here at call time).
    """
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``"auto"`` to ``"triton"`` (GPU tensors and Triton installed) or ``"torch"``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_can_run(device) else "torch"
    if backend == "triton" and not triton_can_run(device):
        raise RuntimeError(
            f"backend='triton' needs a CUDA device or TRITON_INTERPRET=1 (tensors on {device})"
        )
    return backend


@torch.library.custom_op("decoupleq::dequant_matmul", mutates_args=())
def _dequant_matmul_op(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    group_size: int,
    backend: str,
) -> torch.Tensor:
    if backend == "triton":
        from decoupleq.kernels.triton import dequant_matmul_triton

        return dequant_matmul_triton(x, packed, scales, zeros, bits, group_size, bias)
    return dequant_matmul_reference(x, packed, scales, zeros, bits, group_size, bias)


@_dequant_matmul_op.register_fake
def _(x, packed, scales, zeros, bias, bits, group_size, backend):
    return x.new_empty(*x.shape[:-1], packed.shape[1])


def _setup_context(ctx, inputs, output) -> None:
    x, packed, scales, zeros, bias, bits, group_size, _ = inputs
    ctx.save_for_backward(x, packed, scales, zeros)
    ctx.bits, ctx.group_size, ctx.has_bias = bits, group_size, bias is not None
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    """grad_x = g @ W_hat; grad_scale = sum_group((g^T x) * q); grad_zero = sum_group(g^T x)."""
    x, packed, scales, zeros = ctx.saved_tensors
    k, n = x.shape[-1], packed.shape[1]
    g2 = grad.reshape(-1, n).float()
    grad_x = grad_s = grad_z = grad_b = None
    if ctx.needs_input_grad[0]:
        w = dequantize(packed, scales, zeros, ctx.bits, ctx.group_size, k)
        grad_x = (g2 @ w).to(x.dtype).reshape(x.shape)
    if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
        gw = g2.T @ x.reshape(-1, k).float()  # (N, K)
        if ctx.needs_input_grad[2]:
            q = unpack(packed, ctx.bits, k).float()
            grad_s = reduce_groups(gw * q, ctx.group_size).to(scales.dtype)
        if ctx.needs_input_grad[3]:
            grad_z = reduce_groups(gw, ctx.group_size).to(zeros.dtype)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_b = g2.sum(dim=0).to(ctx.bias_dtype)
    return grad_x, None, grad_s, grad_z, grad_b, None, None, None


_dequant_matmul_op.register_autograd(_backward, setup_context=_setup_context)


def dequant_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``y = x @ (scale * q + zero)^T + bias``.

    Args:
        x: activations (..., K), fp16 / bf16 / fp32.
        packed: int32 codes (K_pad * bits / 32, N) from :func:`decoupleq.kernels.packing.pack`.
        scales, zeros: (N, G) floats, G = ceil(K / group_size) (1 when group_size is -1).
        bits: 2, 3, 4 or 8.
        group_size: group length along K, or -1 for per channel.
        bias: optional (N,).
        backend: "auto", "triton" or "torch".

    Returns:
        (..., N) in x's dtype.
    """
    validate_operands(x, packed, scales, zeros, bits, group_size, bias)
    chosen = resolve_backend(backend, x.device)
    return _dequant_matmul_op(x, packed, scales, zeros, bias, bits, group_size, chosen)
