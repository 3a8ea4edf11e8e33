"""Baselines on the decoupleQ interface: round-to-nearest and GPTQ, each `(W, H, config) -> QuantResult`."""

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
    minmax_init,
    quantize_codes,
)
from decoupleq.rounding import gptq_round


def initial_grid(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max (scale, zero) per group, clipped by the H-weighted search when `config.clip_search`."""
    if config.clip_search:
        return clip_search_init(w, h, config.bits, config.group_size, config.symmetric, config.clip_grid)
    return minmax_init(w, config.bits, config.group_size, config.symmetric)


def rtn_quantize(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> QuantResult:
    """Round-to-nearest on the (optionally clip-searched) min/max grid.

    Args:
        w: (N, K) weights; h: (K, K) undamped H (used for the clip search and the reported error).
    """
    start = time.perf_counter()
    wf = w.float()
    scale, zero = initial_grid(wf, h.to(w.device, torch.float64), config)
    k = w.shape[1]
    gsz = config.group_size
    q = quantize_codes(wf, expand_groups(scale, gsz, k), expand_groups(zero, gsz, k),
                       config.qmin, config.qmax)
    return build_result(w, h, q, scale, zero, config.group_size, config.scale_dtype,
                        {"method": "rtn", "seconds": time.perf_counter() - start})


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, config: QuantConfig) -> QuantResult:
    """GPTQ: act-order rounding with error feedback; each group's min/max grid is fitted on its
    error-updated weights when the rounding reaches the group's first column.

    Args:
        w: (N, K) weights; h: (K, K) undamped H.
    """
    start = time.perf_counter()
    factor = damped_factor(h.to(w.device), config.damping, config.max_damping, config.act_order)
    n, k = w.shape
    g = config.num_groups(k)
    empty = torch.zeros(n, g, dtype=torch.float32, device=w.device)

    def fit_group(current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return minmax_init(current, config.bits, -1, config.symmetric)

    q, scale, zero = gptq_round(w.float(), factor, config.qmin, config.qmax, config.group_size,
                                config.gptq_block, empty, empty, fit_group)
    return build_result(w, h, q, scale, zero, config.group_size, config.scale_dtype,
                        {"method": "gptq", "damping": factor.damping, "seconds": time.perf_counter() - start})
