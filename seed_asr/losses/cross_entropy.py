"""Token- and frame-level cross-entropy objectives: the SSL masked prediction and the LM next token."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
"""Label of positions that never count (padding, prompts); ``F.cross_entropy``'s default ``ignore_index``."""


def masked_prediction_loss(
    logits: Tensor | Sequence[Tensor], labels: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Cross-entropy and accuracy over masked frames, averaged over codebooks.

    Args:
        logits: (B, T', C), or a sequence of N such tensors (one per codebook).
        labels: (B, T') int64, or (B, T', N) for N codebooks; IGNORE_INDEX frames never count.
        mask: (B, T') bool, True where the input was masked.

    Returns:
        ``(loss, accuracy)`` scalars. With no masked frame the loss is a zero that keeps the graph and
        the accuracy is 0.
    """
    per_codebook = [logits] if isinstance(logits, Tensor) else list(logits)
    if labels.dim() == 2:
        labels = labels.unsqueeze(-1)
    if labels.shape[-1] != len(per_codebook) or labels.shape[:2] != mask.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} do not match {len(per_codebook)} codebook(s) of logits "
            f"{tuple(per_codebook[0].shape)} and mask {tuple(mask.shape)}"
        )
    losses, accs = [], []
    for n, lg in enumerate(per_codebook):
        if lg.shape[:2] != mask.shape:
            raise ValueError(f"logits {tuple(lg.shape)} do not match mask {tuple(mask.shape)}")
        target = labels[..., n]
        selected = mask & (target != IGNORE_INDEX)
        count = selected.sum().clamp_min(1)
        lg_sel, tgt_sel = lg[selected], target[selected]
        losses.append(F.cross_entropy(lg_sel.float(), tgt_sel, reduction="sum") / count)
        accs.append((lg_sel.argmax(-1) == tgt_sel).sum() / count)
    return torch.stack(losses).mean(), torch.stack(accs).mean()


def next_token_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Negative log-likelihood of each next token and whether it is scored.

    Args:
        logits: (B, T, V) causal LM logits of positions 0..T-1.
        labels: (B, T) token ids, IGNORE_INDEX where a token is not scored.

    Returns:
        ``(nll, scored)``: (B, T-1) float32 NLL of tokens 1..T-1 given their prefixes, and (B, T-1) bool.
    """
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                          reduction="none")
    return nll, targets != IGNORE_INDEX
