"""Text generation of the built-in corpus: short dialogues per domain, in English and Mandarin.

Templates (``templates_<lang>.txt``) and common vocabulary (``slots_<lang>.txt``) are package data in
an INI-like layout: a ``[section]`` line, then one entry per line. A ``{slot}`` is filled from, in
order: the entity pools (proper nouns from the word lists or invented, :mod:`.names`, kept for the
whole dialogue so later turns can refer back to them), the number slots of
:mod:`seed_asr.corpus.numbers`, or the vocabulary slots (whose values may contain slots themselves).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from seed_asr.corpus.names import InventedNames, english_inventions, mandarin_names, mandarin_places
from seed_asr.corpus.numbers import NUMBER_SLOTS
from seed_asr.text.units import entity_pattern

LANGUAGES: tuple[str, ...] = ("en", "zh")
DOMAINS: tuple[str, ...] = ("commands", "numbers", "contacts", "sentences")
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class EntityPool:
    """Proper nouns of one kind: listed (one choice from each part, joined: Mandarin surname + given
    name) or, with probability ``invented_share``, invented."""

    kind: str
    parts: tuple[tuple[str, ...], ...]
    invented: InventedNames | None = None
    invented_share: float = 0.0

    def draw(self, rng: random.Random) -> str:
        if self.invented is not None and self.invented_share > 0 and rng.random() < self.invented_share:
            return self.invented.draw(rng)
        return "".join(rng.choice(part) for part in self.parts)


@dataclass(frozen=True)
class Turn:
    """One utterance of a dialogue.

    Attributes:
        text: the transcript.
        entities: the rare entities occurring in ``text``, in order of first occurrence.
        kinds: the pool kind of each entity (where distractors of the same kind come from).
    """

    text: str
    entities: tuple[str, ...]
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class Lexicon:
    """Everything needed to write the texts of one language.

    Attributes:
        lang: "en" or "zh".
        templates: domain -> templates.
        slots: vocabulary slot -> values.
        pools: entity kind -> pool.
        entity_slots: template slot -> entity kind (several slots may share a pool, e.g. {last}, {street}).
    """

    lang: str
    templates: dict[str, tuple[str, ...]]
    slots: dict[str, tuple[str, ...]]
    pools: dict[str, EntityPool]
    entity_slots: dict[str, str]

    def occurs(self, entity: str, text: str) -> bool:
        """Whether ``entity`` occurs in ``text`` (English: as whole words of any case; Mandarin: anywhere)."""
        return entity_pattern(entity, self.lang).search(text) is not None


def _read_sections(name: str) -> dict[str, tuple[str, ...]]:
    """Parse a ``[section]`` / one-entry-per-line package data file (``#`` starts a comment line)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in resources.files(__package__).joinpath(name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is None:
            raise ValueError(f"{name}: entry {line!r} before any [section]")
        else:
            current.append(line)
    return {key: tuple(values) for key, values in sections.items()}


def read_word_list(name: str) -> tuple[str, ...]:
    """A one-entry-per-line package data file, without duplicates, in file order."""
    lines = resources.files(__package__).joinpath(name).read_text(encoding="utf-8").splitlines()
    return tuple(dict.fromkeys(line.strip() for line in lines if line.strip()))


def check_invented_share(share: float) -> float:
    """``share`` as a probability of inventing an entity.

    Raises:
        ValueError: not a number (a bool included) or outside [0, 1].
    """
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
        raise ValueError(f"invented_names must be a probability in [0, 1], got {share!r}")
    return float(share)


def check_listed_names(count: int | None) -> None:
    """Check ``count``, the number of entries each name list keeps (None: all).

    Raises:
        ValueError: not None and not a positive integer.
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"listed_names must be a positive integer or None (all names), got {count!r}")


def read_name_list(name: str, count: int | None) -> tuple[str, ...]:
    """The first ``count`` entries of the word list ``name`` (None: all of them)."""
    return read_word_list(name)[:count]


@functools.cache
def load_lexicon(lang: str, invented_share: float = 0.0, listed_names: int | None = None) -> Lexicon:
    """Load (once per process and settings) and check the lexicon of ``lang``.

    Args:
        lang: "en" or "zh".
        invented_share: probability that an entity is invented (:mod:`.names`) rather than listed.
        listed_names: entries kept of each name list (first names, surnames, places...; None: all): fewer
            listed names means each is heard more often in a corpus of a given size.

    Raises:
        ValueError: unknown language, a share outside [0, 1], a bad ``listed_names``, or a template using a
            slot that nothing fills.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; choose from {LANGUAGES}")
    invented_share = check_invented_share(invented_share)
    check_listed_names(listed_names)
    if lang == "en":
        lists = {kind: read_name_list(f"{kind}_en.txt", listed_names)
                 for kind in ("first_names", "last_names", "places")}
        pools = {
            kind: EntityPool(kind, (lists[name],), english_inventions(kind), invented_share)
            for kind, name in (("first", "first_names"), ("last", "last_names"), ("place", "places"))
        }
        entity_slots = {"first": "first", "last": "last", "street": "last", "place": "place"}
    else:
        surnames = read_name_list("surnames_zh.txt", listed_names)
        given = read_name_list("given_names_zh.txt", listed_names)
        places = read_name_list("places_zh.txt", listed_names)
        pools = {
            "name": EntityPool("name", (surnames, given), mandarin_names(surnames, given), invented_share),
            "place": EntityPool("place", (places,), mandarin_places(places), invented_share),
        }
        entity_slots = {"name": "name", "place": "place"}
    lexicon = Lexicon(
        lang=lang,
        templates=_read_sections(f"templates_{lang}.txt"),
        slots=_read_sections(f"slots_{lang}.txt"),
        pools=pools,
        entity_slots=entity_slots,
    )
    known = set(entity_slots) | set(NUMBER_SLOTS[lang]) | set(lexicon.slots)
    for source in (*lexicon.templates.values(), *lexicon.slots.values()):
        for entry in source:
            unknown = set(_SLOT.findall(entry)) - known
            if unknown:
                raise ValueError(f"{lang} entry {entry!r} uses unknown slots {sorted(unknown)}")
    missing = set(DOMAINS) - set(lexicon.templates)
    if missing:
        raise ValueError(f"templates_{lang}.txt lacks domains {sorted(missing)}")
    return lexicon


def invent_entity(lang: str, rng: random.Random) -> str:
    """A newly invented proper noun of ``lang`` (:mod:`.names`), of an entity kind drawn uniformly."""
    pools = load_lexicon(lang).pools
    invented = pools[rng.choice(sorted(pools))].invented
    assert invented is not None  # every pool of the lexicon has its inventions
    return invented.draw(rng)


def _expand(
    template: str,
    lexicon: Lexicon,
    state: dict[str, str],
    found: dict[str, str],
    rng: random.Random,
) -> str:
    """Fill the slots of ``template``; entity values go into ``state`` (per dialogue) and ``found``."""

    def fill(match: re.Match[str]) -> str:
        slot = match.group(1)
        kind = lexicon.entity_slots.get(slot)
        if kind is not None:
            if slot not in state:
                taken = set(state.values())
                value = lexicon.pools[kind].draw(rng)
                while value in taken:
                    value = lexicon.pools[kind].draw(rng)
                state[slot] = value
            found.setdefault(state[slot], kind)
            return state[slot]
        number = NUMBER_SLOTS[lexicon.lang].get(slot)
        if number is not None:
            return number(rng)
        return _expand(rng.choice(lexicon.slots[slot]), lexicon, state, found, rng)

    return _SLOT.sub(fill, template)


def make_dialogue(lexicon: Lexicon, domain: str, num_turns: int, rng: random.Random) -> list[Turn]:
    """``num_turns`` utterances of one domain sharing their entities (a person, a place, a street).

    Consecutive turns always differ in text.
    """
    state: dict[str, str] = {}
    turns: list[Turn] = []
    while len(turns) < num_turns:
        found: dict[str, str] = {}
        text = _expand(rng.choice(lexicon.templates[domain]), lexicon, state, found, rng)
        if turns and text == turns[-1].text:
            continue
        turns.append(Turn(text=text, entities=tuple(found), kinds=tuple(found.values())))
    return turns


def context_keywords(turn: Turn, lexicon: Lexicon, num_distractors: int, rng: random.Random) -> list[str]:
    """Hot words of ``turn``: its entities and ``num_distractors`` absent ones of the same kinds, shuffled.

    A turn without entities gets distractors of any kind (an irrelevant context).
    """
    kinds: Sequence[str] = turn.kinds or sorted(lexicon.pools)
    keywords = list(turn.entities)
    chosen = set(keywords)
    while len(keywords) < len(turn.entities) + num_distractors:
        candidate = lexicon.pools[rng.choice(kinds)].draw(rng)
        if candidate not in chosen and not lexicon.occurs(candidate, turn.text):
            chosen.add(candidate)
            keywords.append(candidate)
    rng.shuffle(keywords)
    return keywords
