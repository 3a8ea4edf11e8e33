"""Integer steps: choose codes q for given (or progressively fitted) scales and zeros.

Shapes: W (N, K); scale/zero (N, G); H (K, K).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from decoupleq.hessian import DampedFactor
from decoupleq.quantizer import expand_groups, group_width, quantize_codes, safe_scale

GroupFit = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def gptq_round(w: torch.Tensor, factor: DampedFactor, qmin: int, qmax: int, group_size: int, block: int,
               scale: torch.Tensor, zero: torch.Tensor, fit_group: GroupFit | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ rounding: column by column in `factor.perm` order, feeding each column's rounding error
    forward to the not-yet-rounded columns through the inverse Cholesky factor of H.

    Columns are processed in blocks of `block` with lazy updates of the later columns. Codes, scales and
    zeros come back in the original column order, so groups stay contiguous.

    Args:
        w: (N, K) weights.
        factor: Damped H and its permuted inverse Cholesky factor.
        scale, zero: (N, G) grid per group; kept fixed unless `fit_group` is given.
        fit_group: When given, the (scale, zero) of a group are fitted by this function on the group's
            current (error-updated) weights (N, group) when its first column is reached (GPTQ baseline).

    Returns:
        q (N, K) float codes, scale (N, G), zero (N, G).
    """
    n, k = w.shape
    gs = group_width(k, group_size)
    dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    perm = factor.perm.to(w.device)
    inv_perm = torch.argsort(perm)
    u = factor.inv_chol.to(device=w.device, dtype=dtype)
    wp = w.to(dtype)[:, perm].clone()
    scale, zero = scale.to(dtype).clone(), zero.to(dtype).clone()
    s_cols = safe_scale(expand_groups(scale, group_size, k)[:, perm])
    z_cols = expand_groups(zero, group_size, k)[:, perm]
    q = torch.zeros_like(wp)
    col_group = (perm // gs).tolist()
    fitted = [False] * (k // gs)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = wp[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            g = col_group[j]
            if fit_group is not None and not fitted[g]:
                pos = inv_perm[g * gs:(g + 1) * gs]
                current = _current_columns(wp, w1, err1[:, :i], u[i1:j], pos, i1, i2)
                s, z = fit_group(current)
                scale[:, g], zero[:, g] = s.reshape(n), z.reshape(n)
                s_cols[:, pos], z_cols[:, pos] = safe_scale(scale[:, g:g + 1]), zero[:, g:g + 1]
                fitted[g] = True
            col, s_j, z_j = w1[:, i], s_cols[:, j], z_cols[:, j]
            qc = quantize_codes(col, s_j, z_j, qmin, qmax)
            q[:, j] = qc
            e = (col - (s_j * qc + z_j)) / u1[i, i]
            w1[:, i:].addr_(e, u1[i, i:], alpha=-1)
            err1[:, i] = e
        wp[:, i2:] -= err1 @ u[i1:i2, i2:]
    return q[:, inv_perm], scale, zero


def _current_columns(wp: torch.Tensor, w1: torch.Tensor, err1: torch.Tensor, u_rows: torch.Tensor,
                     pos: torch.Tensor, i1: int, i2: int) -> torch.Tensor:
    """Error-updated values (N, len(pos)) of not-yet-rounded permuted columns `pos` inside the loop:
    columns of the current block live in `w1`; later ones still miss the block's lazy update."""
    out = torch.empty(wp.shape[0], pos.numel(), dtype=wp.dtype, device=wp.device)
    inside = pos < i2
    out[:, inside] = w1[:, pos[inside] - i1]
    later = pos[~inside]
    out[:, ~inside] = wp[:, later] - err1 @ u_rows[:, later]
    return out


def pgd_round(w: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, q_init: torch.Tensor,
              qmin: int, qmax: int, group_size: int, steps: int, lr: float) -> torch.Tensor:
    """Projected-gradient integer step: Adam on continuous codes in [qmin, qmax] minimising the
    H-weighted error with (scale, zero) fixed, then round to nearest.

    Args:
        w: (N, K) weights; h: (K, K) damped H; scale, zero: (N, G); q_init: (N, K) starting codes.

    Returns:
        q (N, K) float codes.
    """
    k = w.shape[1]
    dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    s_cols = safe_scale(expand_groups(scale.to(dtype), group_size, k))
    z_cols = expand_groups(zero.to(dtype), group_size, k)
    wd, hd = w.to(dtype), h.to(dtype)
    q = q_init.to(dtype).clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            d = wd - (s_cols * q + z_cols)
            loss = ((d @ hd) * d).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                q.clamp_(qmin, qmax)
    return torch.round(q.detach()).clamp(qmin, qmax)
