"""Scoring units: the normalised words (English, other languages) or characters (Mandarin) that error
rates and keyword matching count.

English text goes through the Whisper English normaliser and is split into words; Mandarin text loses
punctuation and spaces and is split into characters, with runs of Latin letters or digits kept as words;
other languages use the Whisper basic normaliser and words.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

NORMALIZER_NAME = "whisper-english/zh-char/whisper-basic"

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
# One Han character, or a run of other letters/digits (Latin words inside Chinese stay words).
_ZH_UNIT = re.compile(rf"[{_HAN}]|(?:(?![{_HAN}])[^\W_])+")


@functools.cache
def _english() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


@functools.cache
def _basic() -> BasicTextNormalizer:
    return BasicTextNormalizer()


def is_mandarin(lang: str) -> bool:
    """True for language codes scored by characters ("zh", "zh-CN", "cmn", ...)."""
    return lang.lower().startswith(("zh", "cmn"))


def scoring_units(text: str, lang: str) -> list[str]:
    """Normalise `text` and split it into the units the error rate of `lang` counts.

    Args:
        text: a transcript.
        lang: language code; "en" -> Whisper English normaliser words, Mandarin -> characters
            (Latin runs as words), anything else -> Whisper basic normaliser words.

    Returns:
        The scoring units.
    """
    if is_mandarin(lang):
        return _ZH_UNIT.findall(unicodedata.normalize("NFKC", text).lower())
    normalizer = _english() if lang.lower().startswith("en") else _basic()
    return normalizer(text).split()


def keyword_mask(units: Sequence[str], keywords: Sequence[Sequence[str]]) -> list[bool]:
    """Mark the units that lie inside an occurrence of one of `keywords` (each a unit sequence)."""
    mask = [False] * len(units)
    for keyword in keywords:
        width = len(keyword)
        for start in range(len(units) - width + 1) if width else ():
            if list(units[start : start + width]) == list(keyword):
                mask[start : start + width] = [True] * width
    return mask


def entity_pattern(entity: str, lang: str) -> re.Pattern[str]:
    """How an entity occurs in a text of ``lang``: English as whole words of any case, Mandarin anywhere."""
    if lang == "zh":
        return re.compile(re.escape(entity))
    return re.compile(rf"(?<!\w){re.escape(entity)}(?!\w)", flags=re.IGNORECASE)
