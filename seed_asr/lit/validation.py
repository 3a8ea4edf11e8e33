"""Validation helpers of the training stages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def with_other_audio(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch with each utterance's fbank replaced by the next utterance's (``feats`` (B, T, 80) and
    ``feat_lens`` (B,) rolled by one along B; transcripts and contexts kept). A model's loss on it
    against its loss on the true batch shows whether it listens: equal losses mean it predicts the
    transcripts from the prompt and its language model alone. (With B = 1 the batch is unchanged.)"""
    return {**batch, "feats": batch["feats"].roll(1, 0), "feat_lens": batch["feat_lens"].roll(1, 0)}
