"""Triton W2/W3/W4/W8-A16 kernels for ``y = x @ (scale * q + zero)^T + bias``.

Two paths, picked by the number of activation rows M (``path="auto"``):

* ``gemv`` (M <= 16, decode): a matrix-vector kernel without ``tl.dot``. A program owns BLOCK_N output
  columns, one activation row and a range of K (split-K over the grid). Each step loads the packed words
  of a (BLOCK_K, BLOCK_N) code tile once, as (BLOCK_K / P, BLOCK_N) words of P codes ("slots"), and
  walks the P codes of every word with constant shifts (an unrolled loop: no reshape, no layout
  change, one fused multiply-add per code into a per-slot float32 sum ``sum_j q x``). Each slot then
  gets its group's affine map (``s * sum q x + z * sum x``: one multiply-add per slot, not per
  weight). K splits write float32 partial sums that a second small kernel adds up (with the bias and
  the cast to x's dtype); with one split the first kernel writes the output itself.
* ``dequant`` (M > 16, prefill): a bandwidth-bound kernel writes ``W_hat^T`` (K, N) in x's dtype once
  and cuBLAS does the matmul; at large M the matmul dominates, so this costs one extra pass over a
  16-bit weight.

Codes become floats without an int-to-float conversion: ``u | 0x4B000000`` read as float32 is
``2^23 + u`` exactly, so one subtraction gives ``q = u - 2^(b-1)``. Plain pointer arithmetic only (no
block pointers) so the same code runs on Triton 3.6 GPUs and under the Triton 3.9 interpreter
(``TRITON_INTERPRET=1``, CPU). The interpreter mishandles bf16, so off-GPU the wrapper computes bf16
inputs in float32 and casts the result back.

Tolerance against :func:`~decoupleq.kernels.reference.dequant_matmul_reference`: ``dequant`` rounds
W_hat to x's dtype exactly as the reference does; ``gemv`` never rounds it and accumulates in float32,
so it differs by about 2^-11 (fp16) or 2^-8 (bf16) of ``sum_k |x_k W_hat_kn|`` per output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from decoupleq.kernels.packing import padded_k
from decoupleq.kernels.reference import validate_operands

GEMV_MAX_M = 16
PATHS = ("auto", "gemv", "dequant")
_MAGIC = tl.constexpr(0x4B000000)  # float32 bits of 2^23: OR-ing a small integer u into them gives 2^23 + u


@triton.jit
def _load_words(p_ptr, k_slot, offs_n, mask_n, K, N, K_PAD, BITS: tl.constexpr):
    """The packed words (slots, BLOCK_N) of P-code slots starting at ``k_slot``, loaded once per tile.

    Returns (low, high): the words of the 2-bit plane and of the 1-bit plane for 3 bits (each 1-bit word
    serves two slots), else the words of the single plane twice.
    """
    P: tl.constexpr = 16 if BITS == 3 else 32 // BITS
    mask = (k_slot < K)[:, None] & mask_n[None, :]
    low = tl.load(p_ptr + (k_slot // P)[:, None] * N + offs_n[None, :], mask=mask, other=0)
    low = low.to(tl.uint32, bitcast=True)  # logical shifts: no sign extension to undo
    if BITS == 3:
        rows = K_PAD // 16 + k_slot // 32
        high = tl.load(p_ptr + rows[:, None] * N + offs_n[None, :], mask=mask, other=0)
        return low, high.to(tl.uint32, bitcast=True)
    return low, low


@triton.jit
def _code(low, high, k_slot, J: tl.constexpr, BITS: tl.constexpr):
    """q = u - 2^(BITS-1) of code J of every slot (slots, BLOCK_N) as float32, exact.

    ``u | 0x4B000000`` read as float32 is 2^23 + u, so one subtraction replaces an int-to-float conversion.
    """
    if BITS == 3:
        u = ((low >> (2 * J)) & 3) | (((high >> ((k_slot % 32) + J).to(tl.uint32)[:, None]) & 1) << 2)
    else:
        u = (low >> (J * BITS)) & ((1 << BITS) - 1)
    return (u | _MAGIC).to(tl.float32, bitcast=True) - (8388608.0 + (1 << (BITS - 1)))


@triton.jit
def _slot_scale_zero(s_ptr, z_ptr, k_slot, offs_n, mask_n, K, stride_sn, stride_sg, GROUP_SIZE: tl.constexpr):
    """float32 scale and zero (slots, BLOCK_N) of the group of every slot."""
    g = k_slot * 0 if GROUP_SIZE == -1 else k_slot // GROUP_SIZE
    offs = g[:, None] * stride_sg + offs_n[None, :] * stride_sn
    mask = (k_slot < K)[:, None] & mask_n[None, :]
    s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return s, z


@triton.jit
def _gemv_kernel(
    x_ptr, p_ptr, s_ptr, z_ptr, b_ptr, part_ptr, y_ptr,
    N, K, K_PAD, SPLIT_K, stride_xm, stride_sn, stride_sg, stride_ym,
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    P: tl.constexpr = 16 if BITS == 3 else 32 // BITS
    pid_n, pid_k, m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    first = pid_k * per_split
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t in range(first, tl.minimum(first + per_split, k_tiles)):
        k_slot = t * BLOCK_K + tl.arange(0, BLOCK_K // P) * P
        low, high = _load_words(p_ptr, k_slot, offs_n, mask_n, K, N, K_PAD, BITS)
        s, z = _slot_scale_zero(s_ptr, z_ptr, k_slot, offs_n, mask_n, K, stride_sn, stride_sg, GROUP_SIZE)
        qx = tl.zeros((BLOCK_K // P, BLOCK_N), dtype=tl.float32)  # sum_j q x per slot: one FMA per code
        x_sum = tl.zeros((BLOCK_K // P,), dtype=tl.float32)
        for j in tl.static_range(P):
            x = tl.load(x_ptr + m * stride_xm + k_slot + j, mask=k_slot + j < K, other=0.0).to(tl.float32)
            qx += _code(low, high, k_slot, j, BITS) * x[:, None]
            x_sum += x
        acc += tl.sum(s * qx + z * x_sum[:, None], axis=0)
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        tl.store(y_ptr + m * stride_ym + offs_n, acc.to(y_ptr.dtype.element_ty), mask=mask_n)
    else:
        tl.store(part_ptr + (pid_k * tl.num_programs(2) + m) * N + offs_n, acc, mask=mask_n)


@triton.jit
def _split_sum_kernel(part_ptr, b_ptr, y_ptr, N, SPLIT_K, stride_ym,
                      HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """y[m] = sum over splits of the float32 partials (SPLIT_K, M, N) + bias, in y's dtype."""
    pid_n, m = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for split in range(SPLIT_K):
        acc += tl.load(part_ptr + (split * tl.num_programs(1) + m) * N + offs_n, mask=mask_n, other=0.0)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, acc.to(y_ptr.dtype.element_ty), mask=mask_n)


@triton.jit
def _dequant_kernel(
    p_ptr, s_ptr, z_ptr, w_ptr, N, K, K_PAD, stride_sn, stride_sg,
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """W_hat^T (K, N) = scale * q + zero in w's dtype, one (BLOCK_K, BLOCK_N) tile per program."""
    P: tl.constexpr = 16 if BITS == 3 else 32 // BITS
    k_slot = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K // P) * P
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    low, high = _load_words(p_ptr, k_slot, offs_n, mask_n, K, N, K_PAD, BITS)
    s, z = _slot_scale_zero(s_ptr, z_ptr, k_slot, offs_n, mask_n, K, stride_sn, stride_sg, GROUP_SIZE)
    for j in tl.static_range(P):
        w = _code(low, high, k_slot, j, BITS) * s + z
        rows = k_slot + j
        mask = (rows < K)[:, None] & mask_n[None, :]
        tl.store(w_ptr + rows[:, None] * N + offs_n[None, :], w.to(w_ptr.dtype.element_ty), mask=mask)


def _short_bench(fn, quantiles):
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


def _configs(entries: list[tuple[int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w) for bn, bk, w in entries]


_gemv_autotuned = triton.autotune(  # 2-4 columns per thread share the activation loads
    _configs([(256, 64, 4), (256, 64, 2), (512, 64, 4)]),
    key=["N", "K", "SPLIT_K", "BITS", "GROUP_SIZE"], do_bench=_short_bench,
)(_gemv_kernel)  # fmt: skip
_dequant_autotuned = triton.autotune(
    _configs([(256, 64, 4), (128, 128, 4), (512, 32, 8)]),
    key=["N", "K", "BITS", "GROUP_SIZE"], do_bench=_short_bench,
)(_dequant_kernel)  # fmt: skip

_INTERPRETER_CONFIG = {"BLOCK_N": 64, "BLOCK_K": 64}  # the interpreter cannot autotune; large blocks are fast
_SPLIT_BLOCK_N = 256


def _check_config(config: dict | None) -> None:
    if config is not None:
        bk = config["BLOCK_K"]
        if bk < 32 or bk & (bk - 1):
            raise ValueError(f"config BLOCK_K must be a power of two >= 32, got {bk}")


def _launch(kernel, autotuned, grid, args: tuple, flags: dict, config: dict | None) -> None:
    """Run ``autotuned`` (config None) or ``kernel`` with the fixed meta-parameters of ``config``."""
    if config is None:
        autotuned[grid](*args, **flags)
    else:
        kernel[grid](*args, **flags, **config)


def default_split_k(n: int, k: int, m: int, device: torch.device) -> int:
    """K splits for the gemv path: about 4 programs of 128 columns per SM, at least 256 k per split."""
    if device.type != "cuda":
        return 2
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    programs = triton.cdiv(n, 128) * m
    return max(1, min(triton.cdiv(4 * sms, programs), k // 256))


def dequantize_triton(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    k: int,
    dtype: torch.dtype,
    config: dict | None = None,
) -> torch.Tensor:
    """``W_hat^T = (scale * q + zero)^T`` (K, N) in ``dtype``, computed in float32 and rounded once.

    Args:
        packed: int32 (K_pad * bits / 32, N) from :func:`decoupleq.kernels.packing.pack`.
        scales, zeros: (N, G), any strides (column-major is fastest).
        bits, group_size: quantization grid (group_size -1: per channel).
        k: number of input features K.
        dtype: output dtype.
        config: fixed ``BLOCK_N``, ``BLOCK_K`` (+ ``num_warps``) instead of autotuning.

    Returns:
        (K, N) contiguous, the transpose of :func:`decoupleq.kernels.reference.dequantize` rounded to dtype.
    """
    _check_config(config)
    n = packed.shape[1]
    if config is None and packed.device.type != "cuda":
        config = _INTERPRETER_CONFIG
    w = torch.empty(k, n, device=packed.device, dtype=dtype)
    grid = lambda meta: (triton.cdiv(k, meta["BLOCK_K"]), triton.cdiv(n, meta["BLOCK_N"]))
    args = (packed.contiguous(), scales, zeros, w, n, k, padded_k(k), scales.stride(0), scales.stride(1))
    _launch(_dequant_kernel, _dequant_autotuned, grid, args, {"BITS": bits, "GROUP_SIZE": group_size}, config)
    return w


def _gemv(x2, packed, scales, zeros, bits, group_size, bias, config) -> torch.Tensor:
    """(M, K) @ W_hat^T -> (M, N) in x2's dtype with the gemv kernel (+ the split-K sum)."""
    (m, k), n = x2.shape, packed.shape[1]
    config = dict(config or {})
    split = config.pop("SPLIT_K", None) or default_split_k(n, k, m, x2.device)
    if not config and x2.device.type != "cuda":
        config = _INTERPRETER_CONFIG
    y = torch.empty(m, n, device=x2.device, dtype=x2.dtype)
    part = torch.empty(split, m, n, device=x2.device, dtype=torch.float32) if split > 1 else y
    b = bias if bias is not None else y
    args = (x2, packed, scales, zeros, b, part, y, n, k, padded_k(k), split, x2.stride(0), scales.stride(0),
            scales.stride(1), y.stride(0))  # fmt: skip
    flags = {"BITS": bits, "GROUP_SIZE": group_size, "HAS_BIAS": bias is not None}
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), split, m)
    _launch(_gemv_kernel, _gemv_autotuned, grid, args, flags, config or None)
    if split > 1:
        grid = (triton.cdiv(n, _SPLIT_BLOCK_N), m)
        _split_sum_kernel[grid](part, b, y, n, split, y.stride(0), HAS_BIAS=bias is not None,
                                BLOCK_N=_SPLIT_BLOCK_N)  # fmt: skip
    return y


def dequant_matmul_triton(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None = None,
    path: str = "auto",
    config: dict | None = None,
) -> torch.Tensor:
    """``y = x @ (scale * q + zero)^T + bias`` with the Triton kernels.

    Args:
        x: activations (..., K), fp16 / bf16 / fp32, on a GPU (or the CPU under TRITON_INTERPRET=1).
        packed: int32 (K_pad * bits / 32, N) from :func:`decoupleq.kernels.packing.pack`.
        scales, zeros: (N, G), any strides (column-major is fastest).
        bits: 2, 3, 4 or 8.
        group_size: -1 or a power of two >= 32.
        bias: optional (N,).
        path: "auto" (gemv for M <= 16 rows, else dequant + cuBLAS), "gemv" or "dequant".
        config: fixed meta-parameters instead of autotuning (off-GPU: fixed large blocks by default):
            ``BLOCK_N``, ``BLOCK_K`` (a power of two >= 32), optional ``num_warps``, and for gemv
            ``SPLIT_K`` (default: from the shape and the SM count).

    Returns:
        (..., N) in x's dtype.
    """
    validate_operands(x, packed, scales, zeros, bits, group_size, bias)
    if group_size != -1 and (group_size < 32 or group_size & (group_size - 1)):
        raise ValueError(f"the Triton kernels need group_size -1 or a power of two >= 32, got {group_size}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    _check_config(config)
    out_dtype, k, n = x.dtype, x.shape[-1], packed.shape[1]
    x2 = x.reshape(-1, k)
    if x2.shape[0] == 0:
        return x.new_empty(*x.shape[:-1], n)
    if x.device.type != "cuda":  # interpreter: compute bf16 in float32 (it cannot load bf16)
        to32 = lambda t: t.float() if t.dtype == torch.bfloat16 else t
        x2, scales, zeros = to32(x2), to32(scales), to32(zeros)
        bias = None if bias is None else to32(bias)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    bias = None if bias is None else bias.to(x2.dtype)
    if path == "gemv" or (path == "auto" and x2.shape[0] <= GEMV_MAX_M):
        y = _gemv(x2, packed.contiguous(), scales, zeros, bits, group_size, bias, config)
    else:
        w = dequantize_triton(packed, scales, zeros, bits, group_size, k, x2.dtype, config)
        y = torch.addmm(bias, x2, w) if bias is not None else x2 @ w
    return y.to(out_dtype).reshape(*x.shape[:-1], n)
