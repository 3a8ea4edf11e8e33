"""decoupleQ for one linear layer: alternate an integer step (codes) and a closed-form float step
(scales, zeros) on the H-weighted output error, accepting each step only for rows it improves.

Shapes: W (N, K); q (N, K); scale/zero (N, G); H (K, K).
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from decoupleq.baselines import gptq_quantize, rtn_clip_quantize, rtn_quantize
from decoupleq.config import QuantConfig
from decoupleq.hessian import HessianAccumulator, check_hessian, damped_factor
from decoupleq.quantizer import (
    QuantResult,
    build_result,
    clip_search_init,
    dequantize,
    expand_groups,
    group_width,
    minmax_init,
    quantize_codes,
    row_errors,
    safe_scale,
)
from decoupleq.rounding import gptq_round, pgd_round


def initial_grid(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """decoupleQ's starting (scale, zero) per group: min/max, clipped by the H-weighted search when
    `config.clip_search`."""
    if config.clip_search:
        return clip_search_init(w, h, config.bits, config.group_size, config.symmetric, config.clip_grid)
    return minmax_init(w, config.bits, config.group_size, config.symmetric)


def float_step(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor, group_size: int, symmetric: bool,
               row_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form weighted least squares for (scale, zero) with the codes fixed.

    Row i's unknowns theta = (s_1..s_G, z_1..z_G) solve (A^T H A) theta = A^T H w_i^T where
    A[j, g] = q_ij [j in g] and A[j, G + g] = [j in g]. The (2G x 2G) system is built from the group
    blocks of H without forming A: ss[g, h] = q_g H_gh q_h^T, sz[g, h] = q_g (H_gh 1), zz[g, h] = 1^T H_gh 1.
    Memory per chunk of n rows is O(n K + n G^2) besides H (never an N x G x K tensor). Symmetric
    quantization keeps only the ss block (zero = 0). Solved in float64 by batched Cholesky, with a
    ridge on the rows whose system is singular (e.g. a group whose codes are all equal).

    Args:
        w: (N, K) weights; q: (N, K) codes; h: (K, K) damped H.
        row_chunk: Rows per batched solve.

    Returns:
        scale, zero: (N, G) float64 (zero is all zeros when symmetric; |scale| >= 1e-12).
    """
    n, k = w.shape
    gs = group_width(k, group_size)
    g = k // gs
    h = h.to(device=w.device, dtype=torch.float64)
    hb = h.reshape(k, g, gs).sum(dim=-1)  # (K, G): H summed over the columns of each group
    zz = hb.reshape(g, gs, g).sum(dim=1)  # (G, G)
    scale = torch.empty(n, g, dtype=torch.float64, device=w.device)
    zero = torch.zeros_like(scale)
    for r1 in range(0, n, row_chunk):
        r2 = min(r1 + row_chunk, n)
        qc, wc = q[r1:r2].to(torch.float64), w[r1:r2].to(torch.float64)
        m = r2 - r1
        wh = wc @ h
        rs = (qc * wh).reshape(m, g, gs).sum(dim=-1)
        ss = torch.empty(m, g, g, dtype=torch.float64, device=w.device)
        for gi in range(g):
            cols = slice(gi * gs, (gi + 1) * gs)
            ss[:, gi] = ((qc[:, cols] @ h[cols]) * qc).reshape(m, g, gs).sum(dim=-1)
        if symmetric:
            system, rhs = ss, rs
        else:
            sz = torch.einsum("mgj,gjh->mgh", qc.reshape(m, g, gs), hb.reshape(g, gs, g))
            system = torch.cat([torch.cat([ss, sz], dim=2),
                                torch.cat([sz.transpose(1, 2), zz.expand(m, g, g)], dim=2)], dim=1)
            rhs = torch.cat([rs, wh.reshape(m, g, gs).sum(dim=-1)], dim=1)
        theta = _solve_psd(system, rhs)
        scale[r1:r2] = theta[:, :g]
        if not symmetric:
            zero[r1:r2] = theta[:, g:]
    return safe_scale(scale), zero


def _solve_psd(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve the batched PSD systems (B, P, P) x = (B, P); singular ones get a growing ridge."""
    ridge = torch.zeros(system.shape[0], dtype=system.dtype, device=system.device)
    scale = system.diagonal(dim1=1, dim2=2).mean(dim=1).abs().clamp(min=torch.finfo(system.dtype).tiny)
    eye = torch.eye(system.shape[1], dtype=system.dtype, device=system.device)
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(system + ridge[:, None, None] * eye)
        failed = info != 0
        if not bool(failed.any()):
            return torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
        ridge = torch.where(failed, torch.where(ridge > 0, ridge * 100, scale * 1e-10), ridge)
    raise ValueError("float step: weighted least-squares system stays singular after damping")


def decoupleq_quantize(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> QuantResult:
    """decoupleQ on one layer: min/max (or clip-searched) init, then `max_iter` rounds of
    integer step (GPTQ rounding or PGD, scale/zero fixed) and closed-form float step, each accepted
    only for the rows whose H-weighted error decreased; stops early when fewer than
    `early_stop_frac` of the rows improve in a round.

    Args:
        w: (N, K) weights; h: (K, K) undamped H.

    Returns:
        QuantResult; stats hold "objective" (total damped-H error after init and each round),
        "rows_improved" per round, "damping" and "seconds".
    """
    start = time.perf_counter()
    h = h.to(w.device)
    factor = damped_factor(h, config.damping, config.max_damping, config.act_order)
    hd = factor.h
    k, gsz = w.shape[1], config.group_size
    wf = w.float()
    scale, zero = (t.double() for t in initial_grid(wf, hd, config))
    q = quantize_codes(w.double(), expand_groups(scale, gsz, k), expand_groups(zero, gsz, k),
                       config.qmin, config.qmax)
    err = row_errors(w, dequantize(q, scale, zero, gsz), hd)
    objective, rows_improved = [float(err.sum())], []
    for _ in range(config.max_iter):
        err_start = err
        if config.integer_step == "gptq":
            q_new = gptq_round(wf, factor, config.qmin, config.qmax, gsz, config.gptq_block, scale, zero)[0]
        else:
            q_new = pgd_round(wf, hd, scale, zero, q, config.qmin, config.qmax, gsz, config.pgd_steps,
                              config.pgd_lr)
        q_new = q_new.double()
        err_new = row_errors(w, dequantize(q_new, scale, zero, gsz), hd)
        better = err_new < err
        q = torch.where(better[:, None], q_new, q)
        err = torch.where(better, err_new, err)

        s_new, z_new = float_step(w, q, hd, gsz, config.symmetric, config.row_chunk)
        err_new = row_errors(w, dequantize(q, s_new, z_new, gsz), hd)
        better = err_new < err
        scale = torch.where(better[:, None], s_new, scale)
        zero = torch.where(better[:, None], z_new, zero)
        err = torch.where(better, err_new, err)

        objective.append(float(err.sum()))
        improved = float((err < err_start).double().mean())
        rows_improved.append(improved)
        if improved < config.early_stop_frac:
            break
    stats = {"method": "decoupleq", "damping": factor.damping, "objective": objective,
             "rows_improved": rows_improved, "seconds": time.perf_counter() - start}
    return build_result(w, h, q, scale, zero, gsz, config.scale_dtype, stats)


_METHODS = {"rtn": rtn_quantize, "rtn_clip": rtn_clip_quantize, "gptq": gptq_quantize,
            "decoupleq": decoupleq_quantize}


def quantize_layer(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> QuantResult:
    """Quantize weight `w` (N, K) given its input second moment `h` (K, K) with `config.method`."""
    if w.dim() != 2 or h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"quantize_layer: need W (N, K) and H (K, K), got {tuple(w.shape)} and "
                         f"{tuple(h.shape)}")
    check_hessian(h)
    check_weight(w)
    config.check_layer("<weight>", w.shape[1])
    return _METHODS[config.method](w.detach(), h, config)


def check_weight(w: torch.Tensor) -> None:
    """Raise ValueError when the weight holds NaN or Inf (counting them)."""
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise ValueError(f"the weight {tuple(w.shape)} holds {bad} non-finite values (NaN/Inf)")


class LayerQuantizer:
    """Collects one layer's calibration inputs into H and quantizes its weight.

    Args:
        layer: The weight (N, K) or its shape.
        config: Quantization settings (group_size must divide K).
        name: Layer name used in error messages.
    """

    def __init__(self, layer: torch.Tensor | tuple[int, int], config: QuantConfig, name: str = "layer"
                 ) -> None:
        shape = tuple(layer.shape) if isinstance(layer, torch.Tensor) else tuple(layer)
        if len(shape) != 2:
            raise ValueError(f"layer {name!r}: expected a 2-D weight shape (N, K), got {shape}")
        config.check_layer(name, shape[1])
        self.shape, self.config, self.name = shape, config, name
        self._hessian = HessianAccumulator(shape[1])

    @property
    def num_tokens(self) -> int:
        """Calibration tokens accumulated so far."""
        return self._hessian.num_tokens

    def add_batch(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Accumulate inputs x (..., K); tokens whose `mask` (...) is false (padding) are skipped."""
        self._hessian.add_batch(x, mask)

    def add_gram(self, gram: torch.Tensor, rows: int) -> None:
        """Accumulate a batch's precomputed `input_gram` (K, K) over `rows` tokens."""
        self._hessian.add_gram(gram, rows)

    def hessian(self) -> torch.Tensor:
        """H = X^T X / n (K, K) float64 over the unmasked tokens seen so far."""
        return self._hessian.hessian()

    def solve(self, w: torch.Tensor) -> QuantResult:
        """Quantize `w` (N, K) against the accumulated H."""
        if tuple(w.shape) != self.shape:
            raise ValueError(f"layer {self.name!r}: weight shape {tuple(w.shape)} != {self.shape}")
        try:
            result = quantize_layer(w, self.hessian().to(w.device), self.config)
        except ValueError as err:
            raise ValueError(f"layer {self.name!r}: {err}") from err
        if math.isnan(result.error):
            warnings.warn(f"layer {self.name!r}: relative output error undefined (its calibration inputs, or "
                          "its weight, are all zero)", stacklevel=2)
        return result
