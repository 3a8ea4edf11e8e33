"""Invented proper nouns: names from spaces of millions, so each occurs about once in the corpus.

The word lists of the built-in corpus hold a few hundred names of each kind, and a model trained on the
corpus learns every one of them. Hot words are the names a model has not learnt (contacts, places,
product names): to be recognised they have to be taken from the prompt's context. A share of the
corpus' entities is therefore invented (``invented_names`` of `build_corpus`):
- English: 2-3 syllables (onset + vowel + coda) and an ending of the kind, capitalised ("Dravolford");
- Mandarin: a listed surname and a given name of 1-2 characters of the listed given names ("王涵远");
  places of two characters of the listed places and a place suffix ("州宁镇").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

EN_ONSETS = ("", "b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m", "n",
             "p", "pr", "r", "s", "sh", "sl", "st", "t", "tr", "v", "w", "z")
EN_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ee")
EN_CODAS = ("", "", "", "", "n", "r", "l", "m", "s", "nd")
EN_ENDINGS = {
    "first": ("", "", "a", "o", "ia", "en", "el"),
    "last": ("", "son", "er", "ley", "ford", "ton", "wick", "by"),
    "place": ("", "ton", "burg", "field", "more", "ville", "haven", "mouth"),
}
ZH_PLACE_SUFFIXES = ("市", "县", "镇", "村", "湾", "岭", "港", "庄", "坪", "河")


@dataclass(frozen=True)
class InventedNames:
    """Names of one kind: a head, 1 or more units (one choice from each unit part), a tail.

    Attributes:
        head: first pieces (e.g. Mandarin surnames); ``("",)`` for none.
        unit: the parts of one unit (English: onset, vowel, coda; Mandarin: one character).
        counts: how many units, one drawn uniformly (repeat a count to weight it).
        tail: last pieces (an ending or place suffix); ``("",)`` for none.
        capitalize: upper-case the first letter (English proper nouns).
    """

    head: tuple[str, ...]
    unit: tuple[tuple[str, ...], ...]
    counts: tuple[int, ...]
    tail: tuple[str, ...]
    capitalize: bool = False

    def draw(self, rng: random.Random) -> str:
        count = rng.choice(self.counts)
        units = "".join("".join(rng.choice(part) for part in self.unit) for _ in range(count))
        name = rng.choice(self.head) + units + rng.choice(self.tail)
        return name[:1].upper() + name[1:] if self.capitalize else name


def english_inventions(kind: str) -> InventedNames:
    """Invented English names of ``kind`` ("first", "last" or "place")."""
    syllable = (EN_ONSETS, EN_VOWELS, EN_CODAS)
    return InventedNames(("",), syllable, (2, 2, 3), EN_ENDINGS[kind], capitalize=True)


def mandarin_names(surnames: tuple[str, ...], given_names: tuple[str, ...]) -> InventedNames:
    """Invented Mandarin person names: a surname and 1-2 characters of the given names."""
    characters = tuple(sorted(set("".join(given_names))))
    return InventedNames(surnames, (characters,), (1, 2, 2), ("",))


def mandarin_places(places: tuple[str, ...]) -> InventedNames:
    """Invented Mandarin place names: two characters of the listed places and a place suffix."""
    characters = tuple(sorted(set("".join(places))))
    return InventedNames(("",), (characters,), (2,), ZH_PLACE_SUFFIXES)
