"""Which context a prompt carries: relevant, none, or irrelevant / misleading (context SFT and eval).

Seed-ASR's context SFT mixes samples whose prompt shows their own context with samples that show no
context and samples whose context is irrelevant, so the model learns to use context without copying it
blindly. The kinds (`CONTEXT_KINDS`), per sample:
- ``relevant``: the utterance's own context (dialogue history and hot-word list, as in the shard);
- ``none``: no context;
- ``irrelevant``: the history and hot words of an utterance of another dialogue, without the hot words
  that occur in this utterance's text (so none of them is right);
- ``distractors``: the utterance's hot-word list without the words it contains (same-kind names that
  do not occur: a misleading list), and no history.

A context is a dict ``{"history": str, "keywords": [str], ...}`` as in the shard records; only history
and keywords are shown by the prompt builder.

Text-only training can also rename an utterance's entities (`rename_entities`): each becomes a newly
invented name in the transcript and in its context alike, so that the name cannot be learnt, only taken
from the prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from seed_asr.text.units import entity_pattern, keyword_mask, scoring_units

CONTEXT_KINDS = ("relevant", "none", "irrelevant", "distractors")


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validated mixture fractions: known kinds, each >= 0, summing to 1.

    Raises:
        ValueError: naming the unknown kind, the negative fraction or the sum.
    """
    unknown = sorted(set(fractions) - set(CONTEXT_KINDS))
    if unknown:
        raise ValueError(f"context mixture: unknown kinds {unknown}; known: {list(CONTEXT_KINDS)}")
    clean = {kind: float(value) for kind, value in fractions.items()}
    negative = {kind: value for kind, value in clean.items() if value < 0}
    if negative:
        raise ValueError(f"context mixture: fractions must be >= 0, got {negative}")
    if abs(sum(clean.values()) - 1.0) > 1e-6:
        raise ValueError(f"context mixture: fractions must sum to 1, got {clean} (sum {sum(clean.values())})")
    return clean


def keyword_occurs(keyword: str, text: str, lang: str = "en") -> bool:
    """Whether `keyword` occurs in `text` after the normalisation of the error rate (`scoring_units`)."""
    keyword_units = scoring_units(keyword, lang)
    return bool(keyword_units) and any(keyword_mask(scoring_units(text, lang), [keyword_units]))


def _own_context(meta: Mapping[str, Any]) -> dict[str, Any]:
    return dict(meta.get("context") or {})


def _absent(keywords: Sequence[str], meta: Mapping[str, Any]) -> list[str]:
    """The keywords that do not occur in the utterance of `meta`."""
    text, lang = str(meta.get("text", "")), str(meta.get("lang") or "en")
    return [k for k in keywords if not keyword_occurs(k, text, lang)]


def distractor_context(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The utterance's hot words that do not occur in its text, without history."""
    return {"history": "", "keywords": _absent(_own_context(meta).get("keywords") or [], meta)}


def foreign_context(meta: Mapping[str, Any], donor: Mapping[str, Any]) -> dict[str, Any]:
    """`donor`'s history and its hot words that do not occur in `meta`'s text."""
    context = _own_context(donor)
    return {"history": context.get("history") or "", "keywords": _absent(context.get("keywords") or [], meta)}


def _can_donate(meta: Mapping[str, Any], donor: Mapping[str, Any]) -> bool:
    """Whether `donor` is another utterance of another dialogue (any other one when `meta` has none)."""
    own = meta.get("dialogue")
    return donor is not meta and (not own or donor.get("dialogue") != own)


def mix_contexts(
    metas: Sequence[Mapping[str, Any]], fractions: Mapping[str, float], rng: random.Random
) -> list[dict[str, Any] | None]:
    """Draw each sample's prompt context: its own, none, another dialogue's, or its distractors.

    The kind is drawn per sample with the given fractions; an ``irrelevant`` sample takes the context of
    another sample of the batch from another dialogue (its ``distractors`` when there is none).

    Args:
        metas: B shard records (``text``, ``lang``, ``dialogue``, ``context``).
        fractions: kind -> fraction (see `CONTEXT_KINDS`), summing to 1.
        rng: the source of randomness (e.g. ``random.Random(f"{seed}/{rank}/{step}")``: deterministic).

    Returns:
        B contexts (None for no context).
    """
    fractions = check_fractions(fractions)
    kinds = rng.choices(list(fractions), weights=list(fractions.values()), k=len(metas))
    contexts: list[dict[str, Any] | None] = []
    for meta, kind in zip(metas, kinds, strict=True):
        donors = [d for d in metas if _can_donate(meta, d)] if kind == "irrelevant" else []
        if kind == "relevant":
            contexts.append(_own_context(meta))
        elif kind == "none":
            contexts.append(None)
        elif donors:
            contexts.append(foreign_context(meta, rng.choice(donors)))
        else:
            contexts.append(distractor_context(meta))
    return contexts


def irrelevant_contexts(records: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, dict[str, Any]]:
    """An irrelevant context for every utterance of a measurement set, deterministic from `seed`.

    Each utterance gets `foreign_context` of a donor of another dialogue: donors are the set in a seeded
    random order, utterance i taking the first one at or after position i that belongs to another
    dialogue (every utterance is a donor about once).

    Args:
        records: the set's shard records, with ``__key__``.
        seed: seed of the donor order.

    Returns:
        ``__key__`` -> context.

    Raises:
        ValueError: the set has a single dialogue (no donor exists).
    """
    order = sorted(records, key=lambda r: str(r["__key__"]))
    donors = list(order)
    random.Random(seed).shuffle(donors)
    n = len(donors)
    contexts = {}
    for i, record in enumerate(order):
        donor = next((d for d in (donors[(i + o) % n] for o in range(n)) if _can_donate(record, d)), None)
        if donor is None:
            raise ValueError(f"irrelevant contexts: no other dialogue than {record['__key__']}'s")
        contexts[str(record["__key__"])] = foreign_context(record, donor)
    return contexts


def rename_entities(
    text: str,
    context: Mapping[str, Any] | None,
    entities: Sequence[str],
    lang: str,
    invent: Callable[[], str],
) -> tuple[str, dict[str, Any] | None]:
    """The transcript and its prompt context with each entity renamed to a new name from ``invent``,
    wherever it occurs as the corpus finds it (`entity_pattern`): in the transcript, the hot words and the
    history (other words untouched).

    Args:
        text: the transcript.
        context: the prompt's context (None: no context).
        entities: the names that occur in ``text`` (the record's ``context.entities``).
        lang: "en" or "zh" (how an occurrence is matched).
        invent: returns a new name (e.g. ``lambda: invent_entity(lang, rng)``).

    Returns:
        (text, context) renamed; the context is a new dict.
    """
    renames = {entity: invent() for entity in dict.fromkeys(entities) if entity}

    def rename(value: str) -> str:
        for entity in sorted(renames, key=len, reverse=True):  # "Lindqvist" before a name inside it
            value = entity_pattern(entity, lang).sub(lambda _, new=renames[entity]: new, value)
        return value

    if context is None:
        return rename(text), None
    renamed = dict(context)
    renamed["keywords"] = [rename(k) for k in context.get("keywords") or []]
    renamed["history"] = rename(str(context.get("history") or ""))
    if "entities" in context:
        renamed["entities"] = [rename(e) for e in context["entities"]]
    return rename(text), renamed
