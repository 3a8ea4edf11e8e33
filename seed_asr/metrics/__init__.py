"""Error rates (WER / CER after the field's normalisers) and keyword metrics."""

from seed_asr.metrics.wer import (
    NORMALIZER_NAME,
    ErrorCounts,
    WERAccumulator,
    is_mandarin,
    keyword_mask,
    scoring_units,
    utterance_counts,
    weighted_wer,
)

__all__ = [
    "NORMALIZER_NAME",
    "ErrorCounts",
    "WERAccumulator",
    "is_mandarin",
    "keyword_mask",
    "scoring_units",
    "utterance_counts",
    "weighted_wer",
]
