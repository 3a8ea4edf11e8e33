"""Block-wise refinement: with the integer codes frozen, train a quantized block's float parts
(scales, zeros, optionally norm weights and linear biases) to reproduce its full-precision outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decoupleq.config import QuantConfig
from decoupleq.nn import QuantLinear

BlockInput = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass
class RefineResult:
    """Masked output MSE of the block against its full-precision targets before and after training.

    `loss_after` is the loss of the parameters kept: if training made the loss worse, the initial float
    parts are restored and `loss_after == loss_before`.
    """

    loss_before: float
    loss_after: float
    steps: int


def run_block(block: nn.Module, inputs: BlockInput) -> torch.Tensor:
    """Call `block(*args, **kwargs)` and return its hidden-state output (first element of a tuple)."""
    args, kwargs = inputs
    out = block(*args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def float_parameters(block: nn.Module, train_norms: bool, train_biases: bool) -> list[nn.Parameter]:
    """The float parts of a quantized block: every QuantLinear scale and zero, plus norm parameters
    (modules whose class name ends in "Norm") and QuantLinear biases when asked."""
    params: list[nn.Parameter] = []
    for module in block.modules():
        if isinstance(module, QuantLinear):
            params += [module.scale, module.zero]
            if train_biases and module.bias is not None:
                params.append(module.bias)
        elif train_norms and type(module).__name__.endswith("Norm"):
            params += list(module.parameters(recurse=False))
    return params


def masked_mse(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the features of (..., D) outputs, averaged over tokens whose mask (...)
    is true (all tokens when mask is None)."""
    per_token = (out.float() - target.float()).pow(2).mean(dim=-1)
    if mask is None:
        return per_token.mean()
    return per_token[mask.to(device=per_token.device, dtype=torch.bool).reshape(per_token.shape)].mean()


def refine_block(block: nn.Module, inputs: Sequence[BlockInput], targets: Sequence[torch.Tensor],
                 config: QuantConfig, masks: Sequence[torch.Tensor | None] | None = None) -> RefineResult:
    """Train the float parts of `block` with Adam (config.lr, config.weight_decay) for config.epochs
    passes over the calibration inputs, minimising the masked MSE to `targets`.

    Everything else in the block (integer code buffers, other weights) is left untouched.

    Args:
        block: A block whose linears are QuantLinear modules.
        inputs: Per calibration batch, the block's (args, kwargs).
        targets: Per batch, the full-precision block's output (B, T, D) on the same inputs.
        masks: Per batch, an optional (B, T) token mask (padding excluded from the loss).
    """
    masks = list(masks) if masks is not None else [None] * len(inputs)
    if not len(inputs) == len(targets) == len(masks):
        raise ValueError(f"refine_block: {len(inputs)} inputs, {len(targets)} targets, {len(masks)} masks")
    params = float_parameters(block, config.train_norms, config.train_biases)
    if not params or not inputs:
        return RefineResult(float("nan"), float("nan"), 0)
    trainable = {id(p) for p in params}
    saved_flags = [(p, p.requires_grad) for p in block.parameters()]
    initial = [p.detach().clone() for p in params]
    for p, _ in saved_flags:
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = 0
    try:
        loss_before = _mean_loss(block, inputs, targets, masks)
        with torch.enable_grad():
            for _ in range(config.epochs):
                for item, target, mask in zip(inputs, targets, masks, strict=True):
                    loss = masked_mse(run_block(block, item), target, mask)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
        loss_after = _mean_loss(block, inputs, targets, masks)
        if not loss_after <= loss_before:
            with torch.no_grad():
                for p, value in zip(params, initial, strict=True):
                    p.copy_(value)
            loss_after = loss_before
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
            p.grad = None
    return RefineResult(loss_before, loss_after, steps)


@torch.no_grad()
def _mean_loss(block: nn.Module, inputs: Sequence[BlockInput], targets: Sequence[torch.Tensor],
               masks: Sequence[torch.Tensor | None]) -> float:
    losses = [masked_mse(run_block(block, item), target, mask)
              for item, target, mask in zip(inputs, targets, masks, strict=True)]
    return float(torch.stack(losses).mean())
