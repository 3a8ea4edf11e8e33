"""Triton W2/W3/W4/W8-A16 kernels for ``y = x @ (scale * q + zero)^T + bias``.

Two paths, picked by the number of activation rows M (``path="auto"``):

* ``skinny`` (M <= 64, decode): split-K over a grid (N tiles, K splits, M tiles). Each step loads a
  (BLOCK_N, BLOCK_K) tile of codes (BLOCK_K divides the group, so one scale/zero per column per step),
  multiplies the raw integer codes with the activations on the tensor cores and applies the group's
  affine map to the partial sums: ``sum_k x_k (s q_k + z) = s * sum_k x_k q_k + z * sum_k x_k``; no
  per-weight multiply-add at all. K splits are combined with ``atomic_add``.
* ``gemm`` (M > 64, prefill): a tiled ``tl.dot`` GEMM that dequantizes each code tile in registers with
  one multiply-add per weight (``s * q + z``, rounded to x's dtype) before the dot.

Both compute the transposed product ``y^T = W_hat x^T`` so that the register-resident weight tile is
the left dot operand (allowed in registers by Hopper's wgmma) and the activation tile the right one.
Plain pointer arithmetic only (no block pointers) so the same code runs on Triton 3.6 GPUs and under the
Triton 3.9 interpreter (``TRITON_INTERPRET=1``, CPU). The interpreter mishandles bf16, so off-GPU the
wrapper computes bf16 inputs in float32 and casts the result back.

Tolerance against :func:`~decoupleq.kernels.reference.dequant_matmul_reference`: both accumulate in
float32; they differ by where W_hat is rounded to x's dtype (the skinny path never rounds it), i.e.
by about 2^-11 (fp16) or 2^-8 (bf16) of ``sum_k |x_k W_hat_kn|`` per output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from decoupleq.kernels.reference import validate_operands
from decoupleq.packing import padded_k

SKINNY_MAX_M = 64
PATHS = ("auto", "skinny", "gemm")


@triton.jit
def _load_plane(p_ptr, row0, k0, offs_n, mask_n, K, N, WIDTH: tl.constexpr, BLOCK_K: tl.constexpr):
    """Unsigned codes (BLOCK_N, BLOCK_K) of columns k0.. of one bit plane (see decoupleq.packing).

    Each int32 word is loaded once, as a (BLOCK_N, BLOCK_K / per_word) tile, and split in registers.
    """
    PER_WORD: tl.constexpr = 32 // WIDTH
    WORDS: tl.constexpr = BLOCK_K // PER_WORD
    offs_w = tl.arange(0, WORDS)
    mask = mask_n[:, None] & (k0 + offs_w * PER_WORD < K)[None, :]
    rows = row0 + k0 // PER_WORD + offs_w
    words = tl.load(p_ptr + rows[None, :] * N + offs_n[:, None], mask=mask, other=0)
    shifts = tl.arange(0, PER_WORD) * WIDTH
    codes = (words[:, :, None] >> shifts[None, None, :]) & ((1 << WIDTH) - 1)  # (BLOCK_N, WORDS, PER_WORD)
    return tl.reshape(codes, (codes.shape[0], BLOCK_K))


@triton.jit
def _load_codes(p_ptr, k0, offs_n, mask_n, K, N, K_PAD, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Signed codes q (BLOCK_N, BLOCK_K) of columns k0.. as int32 (k0 and BLOCK_K multiples of 32)."""
    if BITS == 3:
        u = _load_plane(p_ptr, 0, k0, offs_n, mask_n, K, N, 2, BLOCK_K)
        u = u | (_load_plane(p_ptr, K_PAD // 16, k0, offs_n, mask_n, K, N, 1, BLOCK_K) << 2)
    else:
        u = _load_plane(p_ptr, 0, k0, offs_n, mask_n, K, N, BITS, BLOCK_K)
    return u - (1 << (BITS - 1))


@triton.jit
def _load_scale_zero(s_ptr, z_ptr, k0, offs_n, mask_n, stride_sn, stride_sg, GROUP_SIZE: tl.constexpr):
    """float32 scale and zero (BLOCK_N,) of the group holding column k0."""
    g = 0 if GROUP_SIZE == -1 else k0 // GROUP_SIZE
    offs = offs_n * stride_sn + g * stride_sg
    s = tl.load(s_ptr + offs, mask=mask_n, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=mask_n, other=0.0).to(tl.float32)
    return s, z


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr):
    """``a @ b (+ acc)`` with float32 accumulation; exact float32 products when IEEE (no tf32)."""
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def _skinny_kernel(
    x_ptr, p_ptr, s_ptr, z_ptr, b_ptr, y_ptr,
    M, N, K, K_PAD, stride_xm, stride_sn, stride_sg, stride_ym,
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    first = pid_k * per_split
    last = tl.minimum(first + per_split, k_tiles)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    x_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # per-channel only: sum of x over this split
    for t in range(first, last):
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x_t = tl.load(x_ptr + offs_m[None, :] * stride_xm + offs_k[:, None],
                      mask=mask_k[:, None] & mask_m[None, :], other=0.0)  # fmt: skip
        q = _load_codes(p_ptr, t * BLOCK_K, offs_n, mask_n, K, N, K_PAD, BITS, BLOCK_K)
        part = _dot(q.to(x_t.dtype), x_t, None, IEEE)  # (BLOCK_N, BLOCK_M), exact integer weights
        if GROUP_SIZE == -1:
            acc += part
            x_sum += tl.sum(x_t.to(tl.float32), axis=0)
        else:
            k0 = t * BLOCK_K
            s, z = _load_scale_zero(s_ptr, z_ptr, k0, offs_n, mask_n, stride_sn, stride_sg, GROUP_SIZE)
            acc += part * s[:, None] + z[:, None] * tl.sum(x_t.to(tl.float32), axis=0)[None, :]
    if GROUP_SIZE == -1:
        s, z = _load_scale_zero(s_ptr, z_ptr, 0, offs_n, mask_n, stride_sn, stride_sg, GROUP_SIZE)
        acc = acc * s[:, None] + z[:, None] * x_sum[None, :]
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc += bias[:, None] * (pid_k == 0).to(tl.float32)
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    mask = mask_n[:, None] & mask_m[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_kernel(
    x_ptr, p_ptr, s_ptr, z_ptr, b_ptr, y_ptr,
    M, N, K, K_PAD, stride_xm, stride_sn, stride_sg, stride_ym,
    M_BUCKET,  # autotuning key only
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grouped tile order: GROUP_M row tiles sweep the N tiles together, so weight tiles stay in L2.
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for t in range(0, tl.cdiv(K, BLOCK_K)):
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x_t = tl.load(x_ptr + offs_m[None, :] * stride_xm + offs_k[:, None],
                      mask=mask_k[:, None] & mask_m[None, :], other=0.0)  # fmt: skip
        q = _load_codes(p_ptr, t * BLOCK_K, offs_n, mask_n, K, N, K_PAD, BITS, BLOCK_K)
        s, z = _load_scale_zero(s_ptr, z_ptr, t * BLOCK_K, offs_n, mask_n, stride_sn, stride_sg, GROUP_SIZE)
        w = (q.to(tl.float32) * s[:, None] + z[:, None]).to(x_t.dtype)
        acc = _dot(w, x_t, acc, IEEE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_m[None, :])


def _zero_output(nargs: dict) -> None:
    nargs["y_ptr"].zero_()


def _config(kwargs: dict, num_warps: int, num_stages: int) -> triton.Config:
    split = kwargs.get("SPLIT_K", 1) > 1
    hook = _zero_output if split else None
    return triton.Config(kwargs, num_warps=num_warps, num_stages=num_stages, pre_hook=hook)


def _fit_block_k(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Clamp BLOCK_K to the group size (a tile must not straddle groups) and drop duplicates."""
    group = kwargs["GROUP_SIZE"]
    out, seen = [], set()
    for c in configs:
        meta = dict(c.kwargs)
        if group != -1:
            meta["BLOCK_K"] = min(meta["BLOCK_K"], group)
        key = (tuple(sorted(meta.items())), c.num_warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            out.append(_config(meta, c.num_warps, c.num_stages))
    return out


def _short_bench(fn, quantiles):
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


_SKINNY_CONFIGS = [
    _config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk}, w, st)
    for bn, bk, sk, w, st in [
        (64, 64, 1, 4, 4),
        (128, 64, 4, 4, 3),
        (256, 64, 8, 8, 3),
        (128, 128, 8, 4, 3),
    ]
]
_GEMM_CONFIGS = [
    _config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, w, st)
    for bm, bn, bk, w, st in [
        (128, 128, 64, 8, 3),
        (128, 256, 64, 8, 3),
        (64, 128, 64, 4, 4),
    ]
]
_PRUNE = {"early_config_prune": _fit_block_k}
_skinny_autotuned = triton.autotune(
    _SKINNY_CONFIGS, key=["BLOCK_M", "N", "K", "BITS", "GROUP_SIZE"], prune_configs_by=_PRUNE,
    do_bench=_short_bench,
)(_skinny_kernel)  # fmt: skip
_gemm_autotuned = triton.autotune(
    _GEMM_CONFIGS, key=["M_BUCKET", "N", "K", "BITS", "GROUP_SIZE"], prune_configs_by=_PRUNE,
    do_bench=_short_bench,
)(_gemm_kernel)  # fmt: skip


def _interpreter_config(skinny: bool, group_size: int) -> dict:
    """Fixed large blocks for the interpreter, which cannot autotune (no device to time on)."""
    block_k = 64 if group_size == -1 else min(64, group_size)
    if skinny:
        return {"BLOCK_N": 64, "BLOCK_K": block_k, "SPLIT_K": 2}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": block_k, "GROUP_M": 4}


def _skinny_block_m(m: int) -> int:
    return max(16, triton.next_power_of_2(m))


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
        packed: int32 (K_pad * bits / 32, N) from :func:`decoupleq.packing.pack`.
        scales, zeros: (N, G), any strides (column-major is fastest).
        bits: 2, 3, 4 or 8.
        group_size: -1 or a power of two >= 32.
        bias: optional (N,).
        path: "auto" (skinny for M <= 64, else gemm), "skinny" or "gemm".
        config: fixed meta-parameters instead of autotuning (off-GPU: fixed large blocks by default):
            ``BLOCK_N, BLOCK_K, SPLIT_K`` (skinny) or ``BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M`` (gemm), plus
            optional ``num_warps``, ``num_stages``.

    Returns:
        (..., N) in x's dtype.
    """
    validate_operands(x, packed, scales, zeros, bits, group_size, bias)
    if group_size != -1 and (group_size < 32 or group_size & (group_size - 1)):
        raise ValueError(f"the Triton kernels need group_size -1 or a power of two >= 32, got {group_size}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    out_dtype, k, n = x.dtype, x.shape[-1], packed.shape[1]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    on_gpu = x.device.type == "cuda"
    if not on_gpu:  # interpreter: compute bf16 in float32 (it cannot load bf16)
        to32 = (lambda t: t.float() if t.dtype == torch.bfloat16 else t)
        x2, scales, zeros = to32(x2), to32(scales), to32(zeros)
        bias = None if bias is None else to32(bias)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    packed = packed.contiguous()
    if m == 0:
        return x.new_empty(*x.shape[:-1], n)
    # Split-K accumulates with atomics: float32 for bf16 (no bf16 atomics on every GPU).
    acc_dtype = torch.float32 if x2.dtype == torch.bfloat16 else x2.dtype
    y = torch.empty(m, n, device=x.device, dtype=acc_dtype)
    args = (x2, packed, scales, zeros, bias if bias is not None else y, y,
            m, n, k, padded_k(k), x2.stride(0), scales.stride(0), scales.stride(1), y.stride(0))  # fmt: skip
    flags = {"BITS": bits, "GROUP_SIZE": group_size, "HAS_BIAS": bias is not None,
             "IEEE": x2.dtype == torch.float32}  # fmt: skip
    if config is not None and (config["BLOCK_K"] < 32 or -1 < group_size < config["BLOCK_K"]):
        raise ValueError(f"config BLOCK_K={config['BLOCK_K']} must be >= 32 and <= group_size={group_size}")
    use_skinny = path == "skinny" or (path == "auto" and m <= SKINNY_MAX_M)
    if config is None and not on_gpu:
        config = _interpreter_config(use_skinny, group_size)
    if use_skinny:
        block_m = _skinny_block_m(m)
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"], triton.cdiv(m, block_m))
        if config is None:
            _skinny_autotuned[grid](*args, **flags, BLOCK_M=block_m)
        else:
            if config.get("SPLIT_K", 1) > 1:
                y.zero_()
            _skinny_kernel[grid](*args, **flags, BLOCK_M=block_m, **config)
    else:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
        bucket = min(triton.next_power_of_2(m), 4096)
        if config is None:
            _gemm_autotuned[grid](*args, bucket, **flags)
        else:
            _gemm_kernel[grid](*args, bucket, **flags, **config)
    return y.to(out_dtype).reshape(*x.shape[:-1], n)
