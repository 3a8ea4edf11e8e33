"""Verdicts on error-rate targets for the demo report.

A comparison against a model that does not transcribe yet (error rate near or above 100%) measures
noise: quantized copies, context prompts or RL steps move such a model's error rate by a few percent
either way. The report then says "not assessed" instead of met / NOT met.
"""

from __future__ import annotations

ASSESSABLE_ERROR_RATE = 0.5  # a reference model at or above this error rate gives no verdict


def verdict(met: bool, reference_error_rate: float) -> str:
    """``"met"`` / ``"NOT met"``, or why the target cannot be judged from a model at ``reference_error_rate``
    (word errors for English, character errors for Mandarin, as a fraction)."""
    if not reference_error_rate < ASSESSABLE_ERROR_RATE:  # NaN too
        return (
            f"not assessed: the reference model's error rate is {reference_error_rate:.1%} "
            f"(>= {ASSESSABLE_ERROR_RATE:.0%}), it does not transcribe yet"
        )
    return "met" if met else "NOT met"
