"""Bit packing of signed integer codes into int32 words, in the layout the kernels read.

Layout (all bit widths 2, 3, 4, 8):

* Signed codes ``q`` (N, K) in ``[-2^(b-1), 2^(b-1) - 1]`` are stored unsigned, ``u = q + 2^(b-1)``.
* K is padded with ``u = 0`` to ``K_pad = ceil(K / 32) * 32``; the padding is never read by the
  kernels (the matching activations are masked), ``unpack`` drops it.
* Codes are packed **along K**: the packed tensor is int32 of shape ``(K_pad * b / 32, N)``, N
  contiguous, so a tile of consecutive k for a run of output columns is one coalesced load.
* A b-bit code is split into bit planes whose widths divide 32: 2 = [2], 3 = [2, 1], 4 = [4], 8 = [8].
  A plane of width w holds ``32 / w`` codes per word: code k of that plane sits in word row
  ``row0 + k // (32 / w)`` at bit ``(k % (32 / w)) * w``. Planes follow each other along the rows,
  low bits first (3 bits: rows ``[0, K_pad/16)`` hold bits 0-1, rows ``[K_pad/16, 3 K_pad/32)`` bit 2).
  So 3-bit codes cost exactly 3 bits per weight (no waste beyond the K padding), and every word
  belongs to a single group of 32 consecutive k, which keeps group-aligned kernel tiles simple.

Scales and zeros are not packed here; see ``decoupleq.nn.QuantLinear`` for their layout.
"""

from __future__ import annotations

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
K_ALIGN = 32


def bit_planes(bits: int) -> tuple[int, ...]:
    """Widths of the bit planes a ``bits``-bit code is split into, low bits first."""
    planes = {2: (2,), 3: (2, 1), 4: (4,), 8: (8,)}
    if bits not in planes:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    return planes[bits]


def padded_k(k: int) -> int:
    """K rounded up to the packing alignment (32)."""
    return -(-k // K_ALIGN) * K_ALIGN


def packed_rows(k: int, bits: int) -> int:
    """Number of int32 rows of the packed tensor for ``k`` input features."""
    return padded_k(k) * bits // 32


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed codes along K.

    Args:
        q: integer codes (N, K) in ``[-2^(bits-1), 2^(bits-1) - 1]``.
        bits: 2, 3, 4 or 8.

    Returns:
        int32 tensor (K_pad * bits / 32, N), contiguous.
    """
    planes = bit_planes(bits)
    if q.dim() != 2 or q.dtype.is_floating_point or q.dtype == torch.bool:
        raise ValueError(f"q must be a 2-D integer tensor (N, K), got {q.dtype} of shape {tuple(q.shape)}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
        raise ValueError(f"q has values outside [{lo}, {hi}] for {bits} bits")
    n, k = q.shape
    u = (q.to(torch.int64) - lo).T  # (K, N)
    u = torch.nn.functional.pad(u, (0, 0, 0, padded_k(k) - k))
    words, offset = [], 0
    for width in planes:
        per_word = 32 // width
        plane = (u >> offset) & ((1 << width) - 1)
        plane = plane.reshape(-1, per_word, n)  # (rows, per_word, N)
        shifts = (torch.arange(per_word, device=q.device, dtype=torch.int64) * width).view(1, -1, 1)
        words.append((plane << shifts).sum(dim=1))
        offset += width
    packed = torch.cat(words, dim=0)
    # Reinterpret the unsigned 32-bit values as two's-complement int32.
    packed = packed - ((packed >> 31) & 1) * (1 << 32)
    return packed.to(torch.int32).contiguous()


def unpack(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack`.

    Args:
        packed: int32 (K_pad * bits / 32, N) from :func:`pack`.
        bits: 2, 3, 4 or 8.
        k: the original number of input features K.

    Returns:
        int8 codes (N, K).
    """
    planes = bit_planes(bits)
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise ValueError(f"packed must be a 2-D int32 tensor, got {packed.dtype} {tuple(packed.shape)}")
    kp = padded_k(k)
    if packed.shape[0] != kp * bits // 32:
        raise ValueError(
            f"packed has {packed.shape[0]} rows, expected {kp * bits // 32} for K={k} at {bits} bits"
        )
    n = packed.shape[1]
    u = torch.zeros(kp, n, dtype=torch.int32, device=packed.device)
    row, offset = 0, 0
    for width in planes:
        per_word = 32 // width
        rows = kp // per_word
        words = packed[row : row + rows].unsqueeze(1)  # (rows, 1, N)
        shifts = (torch.arange(per_word, device=packed.device, dtype=torch.int32) * width).view(1, -1, 1)
        plane = (words >> shifts) & ((1 << width) - 1)
        u |= plane.reshape(kp, n) << offset
        row, offset = row + rows, offset + width
    return (u[:k].T - (1 << (bits - 1))).to(torch.int8).contiguous()
