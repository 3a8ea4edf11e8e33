"""Baselines on the decoupleQ interface, each `(W, H, config) -> QuantResult`: round-to-nearest (plain
min/max, or with an H-weighted clip search) and GPTQ as the IST-DASLab reference defines it."""

from __future__ import annotations

import time

import torch

from decoupleq.config import QuantConfig
from decoupleq.hessian import damped_factor
from decoupleq.quantizer import (
    QuantResult,
    build_result,
    clip_search_init,
    expand_groups,
    integer_zero_grid,
    quantize_codes,
)
from decoupleq.rounding import gptq_round


def _round_to_nearest(w: torch.Tensor, h: torch.Tensor | None, config: QuantConfig, scale: torch.Tensor,
                      zero: torch.Tensor, start: float) -> QuantResult:
    k, gsz = w.shape[1], config.group_size
    q = quantize_codes(w.float(), expand_groups(scale, gsz, k), expand_groups(zero, gsz, k),
                       config.qmin, config.qmax)
    return build_result(w, h, q, scale, zero, gsz, config.scale_dtype,
                        {"method": config.method, "seconds": time.perf_counter() - start})


def rtn_quantize(w: torch.Tensor, h: torch.Tensor | None, config: QuantConfig) -> QuantResult:
    """Round-to-nearest on each group's min/max grid (`integer_zero_grid`), as in the literature.

    Args:
        w: (N, K) weights; h: (K, K) undamped H, only for the reported error (None: not measured).
    """
    start = time.perf_counter()
    scale, zero = integer_zero_grid(w.float(), config.bits, config.group_size, config.symmetric)
    return _round_to_nearest(w, h, config, scale, zero, start)


def rtn_clip_quantize(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> QuantResult:
    """Round-to-nearest on a min/max grid whose clipping ratio per group (from `config.clip_grid`)
    minimises the H-weighted error.

    Args:
        w: (N, K) weights; h: (K, K) undamped H.
    """
    start = time.perf_counter()
    scale, zero = clip_search_init(w.float(), h.to(w.device, torch.float64), config.bits, config.group_size,
                                   config.symmetric, config.clip_grid)
    return _round_to_nearest(w, h, config, scale, zero, start)


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> QuantResult:
    """GPTQ as the IST-DASLab reference defines it: dead inputs (diag H = 0) get weight 0 and diag 1,
    H is damped by `config.damping` x mean(diag H), columns are rounded in act-order (when
    `config.act_order`) in blocks of `config.gptq_block` with error feedback through the inverse
    Cholesky factor, on the grid of `integer_zero_grid`. With `config.static_groups` every group's grid is
    fixed from the weights before the loop (the reference's static groups, which keep act-order groups
    contiguous); otherwise a group's grid is fitted when the loop reaches its first column, on the
    error-fed weights at that point.

    Args:
        w: (N, K) weights; h: (K, K) undamped H.
    """
    start = time.perf_counter()
    h = h.to(w.device, torch.float64)
    dead = h.diagonal() == 0
    wf, h_live = w.float().clone(), h.clone()
    wf[:, dead] = 0
    h_live[dead, dead] = 1
    factor = damped_factor(h_live, config.damping, config.max_damping, config.act_order)

    def fit_group(current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return integer_zero_grid(current, config.bits, -1, config.symmetric)

    if config.static_groups:
        scale, zero = integer_zero_grid(wf, config.bits, config.group_size, config.symmetric)
    else:
        scale = zero = torch.zeros(w.shape[0], config.num_groups(w.shape[1]), device=w.device)
    q, scale, zero = gptq_round(wf, factor, config.qmin, config.qmax, config.group_size, config.gptq_block,
                                scale, zero, None if config.static_groups else fit_group)
    return build_result(w, h, q, scale, zero, config.group_size, config.scale_dtype,
                        {"method": "gptq", "damping": factor.damping, "seconds": time.perf_counter() - start})
