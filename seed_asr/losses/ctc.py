"""CTC on encoder frames: the auxiliary loss that teaches the encoder to listen."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def ctc_loss(logits: Tensor, lens: Tensor, targets: Sequence[Sequence[int]], blank: int) -> Tensor:
    """CTC loss, mean over samples of loss / target length (infinite losses zeroed).

    Args:
        logits: (B, T', V) frame logits.
        lens: (B,) valid frames per sample.
        targets: B label sequences (no blank inside).
        blank: the blank label.
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T', B, V)
    return F.ctc_loss(
        log_probs,
        torch.tensor([i for t in targets for i in t], dtype=torch.long, device=log_probs.device),
        lens,
        torch.tensor([len(t) for t in targets], dtype=torch.long, device=log_probs.device),
        blank=blank,
        zero_infinity=True,
    )
