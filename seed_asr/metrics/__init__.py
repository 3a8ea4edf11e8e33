"""Error rates (WER / CER over :mod:`seed_asr.text.units`) and keyword metrics."""

from seed_asr.metrics.wer import ErrorCounts, WERAccumulator, utterance_counts, weighted_wer

__all__ = ["ErrorCounts", "WERAccumulator", "utterance_counts", "weighted_wer"]
