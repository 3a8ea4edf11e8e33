"""Minimum word error rate (MWER) training over an N-best list, and the per-hypothesis risks.

MWER (Prabhavalkar et al., 2018) minimises the expected error of the model's own hypotheses: the
N-best list stands in for the whole output space, each hypothesis weighted by its probability
renormalised over the list. Subtracting the list's mean error (a baseline) leaves the gradient's
expectation unchanged and lowers its variance. Seed-ASR's RL stage uses this objective with a WER
whose keyword errors weigh more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seed_asr.metrics.wer import weighted_wer


def _check_nbest(logp: Tensor, risk: Tensor, mask: Tensor) -> None:
    if logp.ndim != 2 or risk.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            "logp, risk and mask must all be (B, N), got "
            f"{tuple(logp.shape)}, {tuple(risk.shape)}, {tuple(mask.shape)}"
        )


def nbest_posteriors(logp: Tensor, mask: Tensor) -> Tensor:
    """Probabilities of the hypotheses renormalised over each utterance's valid ones.

    Args:
        logp: (B, N) log P(y | x) of each hypothesis.
        mask: (B, N) bool, True for the hypotheses that count (False: padding, duplicates).

    Returns:
        (B, N) softmax of `logp` over the valid hypotheses; 0 on masked ones and on rows with none.
    """
    mask = mask.bool()
    has_any = mask.any(dim=1, keepdim=True)
    logits = logp.masked_fill(~mask, float("-inf")).masked_fill(~has_any, 0.0)
    return logits.softmax(dim=1) * mask


def mwer_loss(logp: Tensor, risk: Tensor, mask: Tensor) -> Tensor:
    """MWER loss: sum_i P^(y_i) (risk_i - mean risk), averaged over utterances.

    P^ is `nbest_posteriors`; the mean risk is the plain mean over an utterance's valid hypotheses.
    The gradient with respect to logp_i is P^_i (risk_i - E_P^[risk]): descending it lowers the
    probability of hypotheses worse than the expected risk and raises the others. An utterance with a
    single valid hypothesis (or none) adds 0 but keeps `logp` in the graph, so every rank runs the same
    backward whatever its N-best lists look like.

    Args:
        logp: (B, N) log P(y_i | x) with gradient.
        risk: (B, N) error of each hypothesis (no gradient), e.g. a weighted WER.
        mask: (B, N) bool, True for the hypotheses that count.

    Returns:
        Scalar: the mean over utterances that have at least one valid hypothesis (0 when none has).
    """
    _check_nbest(logp, risk, mask)
    mask = mask.bool()
    risk = risk.detach().to(logp.dtype).masked_fill(~mask, 0.0)
    count = mask.sum(dim=1, keepdim=True)
    baseline = risk.sum(dim=1, keepdim=True) / count.clamp(min=1)
    per_utterance = (nbest_posteriors(logp, mask) * (risk - baseline) * mask).sum(dim=1)
    return per_utterance.sum() / (count > 0).sum().clamp(min=1)


def expected_risk(logp: Tensor, risk: Tensor, mask: Tensor) -> Tensor:
    """(B,) expected risk of each utterance under the renormalised N-best distribution."""
    _check_nbest(logp, risk, mask)
    return (nbest_posteriors(logp, mask) * risk.to(logp.dtype).masked_fill(~mask.bool(), 0.0)).sum(dim=1)


def pad_nbest(nbest: Sequence[Sequence[Sequence[int]]], n: int) -> tuple[list[list[list[int]]], Tensor]:
    """N-best token lists padded to `n` hypotheses each, duplicates masked.

    Args:
        nbest: B lists of hypotheses (token ids), best first.
        n: hypotheses per utterance; longer lists are cut.

    Returns:
        B lists of exactly `n` hypotheses (padding is the empty hypothesis) and the (B, n) bool mask
        of the first occurrence of each distinct real hypothesis.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    padded, mask = [], []
    for hyps in nbest:
        kept = [list(h) for h in hyps[:n]]
        seen: set[tuple[int, ...]] = set()
        row = []
        for h in kept:
            row.append(tuple(h) not in seen)
            seen.add(tuple(h))
        padded.append(kept + [[] for _ in range(n - len(kept))])
        mask.append(row + [False] * (n - len(kept)))
    return padded, torch.tensor(mask, dtype=torch.bool).view(len(padded), n)


def nbest_risks(
    hyps: Sequence[Sequence[str]],
    refs: Sequence[str],
    keywords: Sequence[Sequence[str]],
    langs: Sequence[str],
    keyword_weight: float,
) -> Tensor:
    """(B, N) float32 weighted WER (`seed_asr.metrics.wer.weighted_wer`) of every hypothesis.

    Args:
        hyps: B lists of N hypothesis texts.
        refs: B reference texts.
        keywords: B keyword lists whose errors weigh `keyword_weight` (1 gives the plain WER).
        langs: B language codes (scoring units: words, or characters for Mandarin).
        keyword_weight: weight of errors on keyword units.
    """
    if not len(hyps) == len(refs) == len(keywords) == len(langs):
        raise ValueError(
            f"need as many hypothesis lists ({len(hyps)}), references ({len(refs)}), keyword lists "
            f"({len(keywords)}) and languages ({len(langs)})"
        )
    rows = [
        [weighted_wer(h, ref, kw, keyword_weight, lang) for h in row]
        for row, ref, kw, lang in zip(hyps, refs, keywords, langs, strict=True)
    ]
    return torch.tensor(rows, dtype=torch.float32)
