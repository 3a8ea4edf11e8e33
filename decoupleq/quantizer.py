"""Pure functions of the quantization grid: W_hat = scale * q + zero with signed integer codes q.

Shapes: W (N, K) with N output rows and K input columns; scale/zero (N, G) with G = K / group_size groups
(G = 1 for group_size -1); H (K, K) the layer-input second moment X^T X / n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Smallest |scale| kept: keeps (W - zero) / scale finite after a degenerate float step.
_MIN_SCALE = 1e-12


@dataclass
class QuantResult:
    """One quantized layer.

    Attributes:
        q: (N, K) int8 signed codes in [qmin, qmax], in the original column order.
        scale: (N, G) float32 scale per row and group.
        zero: (N, G) float32 zero per row and group.
        error: Relative output error ||X (W - W_hat)^T|| / ||X W^T|| measured with the undamped H (NaN
            when undefined, or not measured: data-free RTN without calibration inputs).
        stats: Solver details (damping used, iterations, errors per iteration, seconds, ...).
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    error: float
    stats: dict[str, Any] = field(default_factory=dict)


def qrange(bits: int) -> tuple[int, int]:
    """Smallest and largest signed code of a `bits`-wide grid: (-2^(b-1), 2^(b-1) - 1)."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def group_width(in_features: int, group_size: int) -> int:
    """Columns per group (`in_features` for per-channel group_size -1)."""
    return in_features if group_size == -1 else group_size


def expand_groups(t: torch.Tensor, group_size: int, in_features: int) -> torch.Tensor:
    """Repeat per-group values (N, G) along the columns of their group -> (N, K)."""
    return t.repeat_interleave(group_width(in_features, group_size), dim=1)


def safe_scale(scale: torch.Tensor) -> torch.Tensor:
    """`scale` with entries of magnitude below 1e-12 replaced by 1e-12 (so codes stay finite)."""
    return torch.where(scale.abs() < _MIN_SCALE, torch.full_like(scale, _MIN_SCALE), scale)


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int
                   ) -> torch.Tensor:
    """Round-to-nearest codes of `w` on the grid scale * q + zero, clamped to [qmin, qmax].

    Args:
        w: (..., K) weights; scale, zero: broadcastable to `w` (already expanded per column), with
            |scale| >= 1e-12 (see `safe_scale`).

    Returns:
        Codes as a float tensor shaped like `w` (cast to int8 for storage).
    """
    return torch.round((w - zero) / scale).clamp_(qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """W_hat (N, K) = scale * q + zero from codes q (N, K) and scale/zero (N, G), in scale's dtype."""
    k = q.shape[1]
    return expand_groups(scale, group_size, k) * q.to(scale.dtype) + expand_groups(zero, group_size, k)


def minmax_init(w: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                ratio: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (scale, zero) per group mapping the (clipped) weight range onto the code range.

    Asymmetric: [ratio*min, ratio*max] -> [qmin, qmax] with a float zero. Symmetric: zero = 0 and
    [-ratio*absmax, ratio*absmax] spans the full code range (qmax - qmin steps).

    Args:
        w: (N, K) weights.
        ratio: Clipping ratio, a float or a (N, G) tensor.

    Returns:
        scale, zero: (N, G) in w's dtype.
    """
    qmin, qmax = qrange(bits)
    n, k = w.shape
    wg = w.reshape(n, -1, group_width(k, group_size))
    lo = wg.amin(dim=-1).clamp(max=0) if symmetric else wg.amin(dim=-1)
    hi = wg.amax(dim=-1)
    if symmetric:
        hi = torch.maximum(hi, -lo)
        lo = -hi
    lo, hi = lo * ratio, hi * ratio
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=_MIN_SCALE)
    zero = torch.zeros_like(scale) if symmetric else lo - scale * qmin
    return scale, zero


def row_errors(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """H-weighted squared error per row: (w_i - w_hat_i) H (w_i - w_hat_i)^T -> (N,), in H's dtype."""
    d = (w - w_hat).to(h.dtype)
    return ((d @ h) * d).sum(dim=1)


def relative_output_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """||X (W - W_hat)^T|| / ||X W^T|| expressed through H = X^T X / n; NaN (undefined) when the
    reference output X W^T is zero (all-zero calibration inputs, or a zero weight)."""
    num = row_errors(w, w_hat, h).sum()
    den = row_errors(w, torch.zeros_like(w), h).sum()
    if den <= 0:
        return float("nan")
    return float((num.clamp(min=0) / den).sqrt())


def group_block_errors(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor, group_size: int
                       ) -> torch.Tensor:
    """H-weighted error of each (row, group) using the diagonal block of H of that group -> (N, G).

    Cross-group terms are left out, so groups can be scored independently (used by the clip search).
    """
    n, k = w.shape
    gs = group_width(k, group_size)
    g = k // gs
    d = (w - w_hat).to(h.dtype).reshape(n, g, gs)
    blocks = h.reshape(g, gs, g, gs).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (G, gs, gs)
    return torch.einsum("ngi,gij,ngj->ng", d, blocks, d)


def integer_zero_grid(w: torch.Tensor, bits: int, group_size: int, symmetric: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The round-to-nearest grid of the GPTQ reference (IST-DASLab) and llmcompressor, per group.

    The range [min(w, 0), max(w, 0)] (zero always inside; [-1, 1] for an all-zero group) maps onto the
    2^bits codes with an integer zero point, expressed here as the equivalent float ``zero`` of
    W_hat = scale * q + zero. Symmetric: [-absmax, absmax] with zero = 0.

    Returns:
        scale, zero: (N, G) in w's dtype.
    """
    qmin, qmax = qrange(bits)
    n, k = w.shape
    wg = w.reshape(n, -1, group_width(k, group_size))
    lo, hi = wg.amin(dim=-1).clamp(max=0), wg.amax(dim=-1).clamp(min=0)
    if symmetric:
        hi = torch.maximum(hi, -lo)
        lo = -hi
    empty = (lo == 0) & (hi == 0)
    lo, hi = torch.where(empty, -1.0, lo), torch.where(empty, 1.0, hi)
    scale = (hi - lo) / (qmax - qmin)
    if symmetric:
        return scale, torch.zeros_like(scale)
    zero_point = torch.round(-lo / scale)  # the code (0 ... 2^bits - 1) of the value 0
    return scale, -scale * (zero_point + qmin)


def clip_search_init(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                     grid: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max init with, per (row, group), the clipping ratio of `grid` minimising the H-weighted error.

    Each candidate is scored by rounding to nearest and measuring the group's error with its diagonal
    block of H (not plain MSE), so columns that see large activations weigh more.

    Returns:
        scale, zero: (N, G) in w's dtype.
    """
    qmin, qmax = qrange(bits)
    best_s = best_z = best_err = None
    for ratio in grid:
        s, z = minmax_init(w, bits, group_size, symmetric, ratio)
        k = w.shape[1]
        se, ze = expand_groups(s, group_size, k), expand_groups(z, group_size, k)
        err = group_block_errors(w, se * quantize_codes(w, se, ze, qmin, qmax) + ze, h, group_size)
        if best_err is None:
            best_s, best_z, best_err = s, z, err
            continue
        better = err < best_err
        best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
        best_err = torch.where(better, err, best_err)
    return best_s, best_z


def build_result(w: torch.Tensor, h: torch.Tensor | None, q: torch.Tensor, scale: torch.Tensor,
                 zero: torch.Tensor, group_size: int, scale_dtype: str, stats: dict[str, Any]) -> QuantResult:
    """Package codes and grid as a QuantResult: scale and zero are rounded to their storage dtype
    `scale_dtype` (returned as float32) and the relative output error is measured with them and `h`
    (NaN, not measured, without one)."""
    dtype = getattr(torch, scale_dtype)
    scale, zero = scale.to(dtype).float(), zero.to(dtype).float()
    error = float("nan")
    if h is not None:
        w_hat = dequantize(q, scale.double(), zero.double(), group_size)
        error = relative_output_error(w.double(), w_hat, h.to(w.device, torch.float64))
    return QuantResult(q=q.to(torch.int8), scale=scale, zero=zero, error=error, stats=stats)
