"""Word and character error rates as the field reports them, with keyword (contextual biasing) metrics.

Errors are counted over scoring units (:mod:`seed_asr.text.units`): words, or for Mandarin characters
with Latin runs as words (a "mixed error rate", the usual Mandarin CER). Alignments come from jiwer.

Keyword metrics take the biasing list of an utterance (keywords, possibly multi-word). A unit is
biased when it lies inside an occurrence of a keyword (same normalisation) in its own text:
- B-WER: substitutions and deletions of biased reference units, plus insertions of biased
  hypothesis units, over the number of biased reference units; U-WER the same for the other units;
- keyword recall: occurrences of keywords in the references also found in the hypotheses (counted
  per utterance, at most as often as in the reference), over the occurrences in the references.

Given how often each unit occurs in the training transcripts, reference units are also scored by that
count (`TRAIN_COUNT_BUCKETS`): the share substituted or deleted (insertions have no reference unit),
which tells errors of words a model rarely heard from errors of words it knows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields

import jiwer

from seed_asr.text.units import NORMALIZER_NAME, is_mandarin, keyword_mask, scoring_units

# (lowest count, label) of the training-count buckets, ascending
TRAIN_COUNT_BUCKETS = ((0, "0"), (1, "1-9"), (10, "10-99"), (100, "100+"))


def train_count_bucket(count: int) -> str:
    """Label of the `TRAIN_COUNT_BUCKETS` bucket holding ``count`` (>= 0) training occurrences."""
    return next(label for low, label in reversed(TRAIN_COUNT_BUCKETS) if count >= low)


def _count_occurrences(units: Sequence[str], keyword: Sequence[str]) -> int:
    width = len(keyword)
    return sum(list(units[i : i + width]) == list(keyword) for i in range(len(units) - width + 1))


@dataclass
class ErrorCounts:
    """Summable error counts of one or more utterances (units: words, or characters for Mandarin)."""

    utterances: int = 0
    keyword_utterances: int = 0
    ref_units: int = 0
    errors: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    biased_ref: int = 0
    biased_errors: int = 0
    unbiased_ref: int = 0
    unbiased_errors: int = 0
    keywords_in_ref: int = 0
    keywords_recalled: int = 0

    def __iadd__(self, other: ErrorCounts) -> ErrorCounts:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        return self


def utterance_counts(hyp: str, ref: str, lang: str, keywords: Sequence[str] = ()) -> ErrorCounts:
    """Error counts of one utterance, with keyword counts when a biasing list is given.

    Args:
        hyp: recognised text.
        ref: reference text.
        lang: language code (see `scoring_units`).
        keywords: the utterance's biasing list (hot words / context entities, may be multi-word).

    Returns:
        The utterance's `ErrorCounts`.
    """
    hyp_units, ref_units, edits = _aligned(hyp, ref, lang)
    keyword_units = [units for units in (scoring_units(k, lang) for k in keywords) if units]
    ref_biased = keyword_mask(ref_units, keyword_units)
    hyp_biased = keyword_mask(hyp_units, keyword_units)
    counts = ErrorCounts(utterances=1, keyword_utterances=int(bool(keywords)), ref_units=len(ref_units))
    counts.biased_ref = sum(ref_biased)
    counts.unbiased_ref = len(ref_units) - counts.biased_ref
    for kind, ref_pos, hyp_pos in edits:
        biased = ref_biased[ref_pos] if kind != "insertions" else hyp_biased[hyp_pos]
        setattr(counts, kind, getattr(counts, kind) + 1)
        counts.errors += 1
        if biased:
            counts.biased_errors += 1
        else:
            counts.unbiased_errors += 1
    for keyword in {tuple(units) for units in keyword_units}:
        in_ref = _count_occurrences(ref_units, keyword)
        counts.keywords_in_ref += in_ref
        counts.keywords_recalled += min(in_ref, _count_occurrences(hyp_units, keyword))
    return counts


def _edit_positions(hyp_units: list[str], ref_units: list[str]) -> list[tuple[str, int, int]]:
    """(kind, ref position, hyp position) of every edit of the jiwer alignment; kind is the ErrorCounts
    field: "substitutions", "deletions" or "insertions"."""
    if not ref_units or not hyp_units:  # jiwer needs words on both sides to align
        return [("deletions", i, -1) for i in range(len(ref_units))] + [
            ("insertions", -1, j) for j in range(len(hyp_units))
        ]
    kinds = {"substitute": "substitutions", "delete": "deletions", "insert": "insertions"}
    edits = []
    output = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units))
    for chunk in output.alignments[0]:
        if chunk.type == "equal":
            continue
        ref_span = range(chunk.ref_start_idx, chunk.ref_end_idx)
        hyp_span = range(chunk.hyp_start_idx, chunk.hyp_end_idx)
        if chunk.type == "substitute":
            edits += [(kinds[chunk.type], r, h) for r, h in zip(ref_span, hyp_span, strict=True)]
        elif chunk.type == "delete":
            edits += [(kinds[chunk.type], r, -1) for r in ref_span]
        else:
            edits += [(kinds[chunk.type], -1, h) for h in hyp_span]
    return edits


def _aligned(hyp: str, ref: str, lang: str) -> tuple[list[str], list[str], list[tuple[str, int, int]]]:
    """The scoring units of ``hyp`` and ``ref`` and the edits of their alignment (`_edit_positions`)."""
    hyp_units, ref_units = scoring_units(hyp, lang), scoring_units(ref, lang)
    return hyp_units, ref_units, _edit_positions(hyp_units, ref_units)


def missed_ref_units(hyp: str, ref: str, lang: str) -> list[tuple[str, bool]]:
    """Each reference unit of the alignment, with True where it is substituted or deleted."""
    _, ref_units, edits = _aligned(hyp, ref, lang)
    missed = {ref_pos for kind, ref_pos, _ in edits if kind != "insertions"}
    return [(unit, i in missed) for i, unit in enumerate(ref_units)]


def substitution_pairs(hyp: str, ref: str, lang: str) -> list[tuple[str, str]]:
    """(reference unit, hypothesis unit) of each substitution of the alignment."""
    hyp_units, ref_units, edits = _aligned(hyp, ref, lang)
    return [(ref_units[r], hyp_units[h]) for kind, r, h in edits if kind == "substitutions"]


def hallucinated_keywords(hyp: str, ref: str, keywords: Sequence[str], lang: str = "en") -> int:
    """Keyword occurrences in `hyp` beyond those in `ref` (e.g. hot words copied from a misleading context).

    Counted per distinct keyword (same normalisation as the error rate): `max(0, in_hyp - in_ref)`.
    """
    hyp_units, ref_units = scoring_units(hyp, lang), scoring_units(ref, lang)
    distinct = {tuple(units) for units in (scoring_units(k, lang) for k in keywords) if units}
    return sum(max(0, _count_occurrences(hyp_units, k) - _count_occurrences(ref_units, k)) for k in distinct)


def weighted_wer(
    hyp: str, ref: str, keywords: Sequence[str], keyword_weight: float = 3.0, lang: str = "en"
) -> float:
    """Error rate with keyword units weighted by `keyword_weight` (the RL reward's WER).

    `(w * biased_errors + unbiased_errors) / max(w * biased_ref + unbiased_ref, 1)`, with the B-WER /
    U-WER split of `utterance_counts`; `keyword_weight=1` gives the plain WER.

    Args:
        hyp: recognised text.
        ref: reference text.
        keywords: the utterance's keywords.
        keyword_weight: weight of errors on keywords, >= 0.
        lang: language code (see `scoring_units`).

    Returns:
        The weighted error rate (0 for a perfect hypothesis; may exceed 1 with insertions).
    """
    if keyword_weight < 0:
        raise ValueError(f"keyword_weight must be >= 0, got {keyword_weight}")
    c = utterance_counts(hyp, ref, lang, keywords)
    denominator = keyword_weight * c.biased_ref + c.unbiased_ref
    return (keyword_weight * c.biased_errors + c.unbiased_errors) / max(denominator, 1.0)


def _rate(errors: int, total: int) -> float:
    return errors / total if total else float("nan")


class WERAccumulator:
    """Collects (hypothesis, reference, metadata) triples and reports error rates and breakdowns.

    Args:
        group_by: metadata keys to break error rates down by (e.g. "domain", "speaker", "accent");
            utterances without the key are left out of that breakdown.
        default_lang: language of utterances whose metadata has no "lang".
        heard_names: the names a model heard in training (e.g. `heard_names` of its training shards):
            given, keyword recall is also reported for the keywords among them (``/heard``) and the
            others (``/unheard``: names the model can only take from its prompt).
        train_unit_counts: (lang, scoring unit) -> occurrences in the training transcripts: given,
            reference units are also scored by that count (``unit_error/<lang>/train_count_<bucket>``).
    """

    def __init__(
        self,
        group_by: Sequence[str] = ("domain", "speaker"),
        default_lang: str = "en",
        heard_names: Collection[str] | None = None,
        train_unit_counts: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.group_by = tuple(group_by)
        self.default_lang = default_lang
        self.heard_names = None if heard_names is None else {name.casefold() for name in heard_names}
        self.train_unit_counts = train_unit_counts
        self.reset()

    def reset(self) -> None:
        """Forget everything collected."""
        self._total = ErrorCounts()
        self._by_lang: dict[str, ErrorCounts] = defaultdict(ErrorCounts)
        self._by_group: dict[tuple[str, str], ErrorCounts] = defaultdict(ErrorCounts)
        self._by_exposure: dict[str, ErrorCounts] = defaultdict(ErrorCounts)
        self._by_train_count: dict[tuple[str, str], ErrorCounts] = defaultdict(ErrorCounts)

    def update(
        self, hyp: str, ref: str, meta: Mapping[str, object] | None = None, keywords: Sequence[str] = ()
    ) -> None:
        """Score one utterance.

        Args:
            hyp: recognised text.
            ref: reference text.
            meta: the sample's metadata ("lang" and the `group_by` keys are read).
            keywords: the utterance's biasing list for B-WER / U-WER / keyword recall.
        """
        meta = meta or {}
        lang = str(meta.get("lang") or self.default_lang)
        counts = utterance_counts(hyp, ref, lang, keywords)
        self._total += counts
        self._by_lang[lang] += counts
        for key in self.group_by:
            if meta.get(key) is not None:
                self._by_group[(key, str(meta[key]))] += counts
        if self.heard_names is not None and keywords:
            for exposure in ("heard", "unheard"):
                listed = [k for k in keywords if (k.casefold() in self.heard_names) == (exposure == "heard")]
                if listed:
                    self._by_exposure[exposure] += utterance_counts(hyp, ref, lang, listed)
        if self.train_unit_counts is not None:
            for unit, missed in missed_ref_units(hyp, ref, lang):
                bucket = train_count_bucket(self.train_unit_counts.get((lang, unit), 0))
                self._by_train_count[(lang, bucket)] += ErrorCounts(ref_units=1, errors=int(missed))

    def compute(self) -> dict[str, float | int | str]:
        """Metrics collected so far.

        Keys: `wer` (all utterances pooled: words, characters for Mandarin), `wer/<lang>` or
        `cer/<lang>` for Mandarin, `wer/<group>/<value>`, `b_wer`, `u_wer`, `keyword_recall` (overall
        and `/<lang>`, when keywords were given), `num_utts`, `num_ref_units` (overall and
        `/<lang>`), and `normalizer`; with heard names `keyword_recall/{heard,unheard}`, with training unit
        counts `unit_error/<lang>/train_count_<bucket>` and `num_ref_units/<lang>/train_count_<bucket>`.
        """
        metrics: dict[str, float | int | str] = {"normalizer": NORMALIZER_NAME}
        metrics.update(self._summary("", "wer", self._total))
        for lang, counts in sorted(self._by_lang.items()):
            metrics.update(self._summary(f"/{lang}", "cer" if is_mandarin(lang) else "wer", counts))
        for (key, value), counts in sorted(self._by_group.items()):
            metrics[f"wer/{key}/{value}"] = _rate(counts.errors, counts.ref_units)
        for exposure, counts in sorted(self._by_exposure.items()):
            metrics[f"keyword_recall/{exposure}"] = _rate(counts.keywords_recalled, counts.keywords_in_ref)
            metrics[f"num_keywords_in_ref/{exposure}"] = counts.keywords_in_ref
        for (lang, bucket), counts in sorted(self._by_train_count.items()):
            metrics[f"unit_error/{lang}/train_count_{bucket}"] = _rate(counts.errors, counts.ref_units)
            metrics[f"num_ref_units/{lang}/train_count_{bucket}"] = counts.ref_units
        return metrics

    @staticmethod
    def _summary(suffix: str, name: str, counts: ErrorCounts) -> dict[str, float | int]:
        summary: dict[str, float | int] = {
            f"{name}{suffix}": _rate(counts.errors, counts.ref_units),
            f"num_utts{suffix}": counts.utterances,
            f"num_ref_units{suffix}": counts.ref_units,
        }
        if counts.keyword_utterances:
            summary[f"b_wer{suffix}"] = _rate(counts.biased_errors, counts.biased_ref)
            summary[f"u_wer{suffix}"] = _rate(counts.unbiased_errors, counts.unbiased_ref)
            summary[f"keyword_recall{suffix}"] = _rate(counts.keywords_recalled, counts.keywords_in_ref)
        return summary
