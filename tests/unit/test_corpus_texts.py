"""Dialogue texts, entities and keywords of the built-in corpus."""

import itertools
import random
import re

import pytest

from seed_asr.corpus.numbers import NUMBER_SLOTS
from seed_asr.corpus.synth import get_engine
from seed_asr.corpus.texts import (
    DOMAINS,
    LANGUAGES,
    context_keywords,
    load_lexicon,
    make_dialogue,
    read_word_list,
)

CJK = re.compile(r"[\u4e00-\u9fff]+")


def _dialogues(lang, count=40, seed=0):
    rng = random.Random(seed)
    lexicon = load_lexicon(lang)
    return [(domain, make_dialogue(lexicon, domain, 4, rng)) for domain in DOMAINS for _ in range(count)]


def test_entity_lists_are_large_and_disjoint():
    lists = {name: set(read_word_list(f"{name}.txt")) for name in
             ("first_names_en", "last_names_en", "places_en", "surnames_zh", "given_names_zh", "places_zh")}
    for name in ("first_names_en", "last_names_en", "places_en", "places_zh"):
        assert len(lists[name]) >= 200, name
    assert len(lists["surnames_zh"]) * len(lists["given_names_zh"]) > 10_000
    assert not lists["first_names_en"] & lists["last_names_en"]
    assert not (lists["first_names_en"] | lists["last_names_en"]) & lists["places_en"]


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        load_lexicon("fr")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_dialogues_share_entities_and_fill_every_slot(lang):
    lexicon = load_lexicon(lang)
    for domain, turns in _dialogues(lang):
        assert len(turns) == 4
        assert all(a.text != b.text for a, b in zip(turns, turns[1:], strict=False))
        for turn in turns:
            assert "{" not in turn.text and "}" not in turn.text
            for entity, kind in zip(turn.entities, turn.kinds, strict=True):
                assert lexicon.occurs(entity, turn.text)
                assert lexicon.pools[kind].parts  # a known kind
        first_names = {e for t in turns for e, k in zip(t.entities, t.kinds, strict=True) if k == "first"}
        assert len(first_names) <= 1, (domain, [t.text for t in turns])  # one person per dialogue


def test_some_domains_carry_rare_entities():
    for lang in LANGUAGES:
        with_entities = {domain for domain, turns in _dialogues(lang) if any(t.entities for t in turns)}
        assert {"commands", "contacts"} <= with_entities


def test_english_texts_are_words_with_capitals_only_on_entities():
    for _, turns in _dialogues("en"):
        for turn in turns:
            assert not re.search(r"\d", turn.text), turn.text
            entity_words = {w for e in turn.entities for w in e.split()}
            for word in re.findall(r"[A-Za-z']+", turn.text):
                if word[0].isupper():
                    assert word.removesuffix("'s") in entity_words or word in {"I", "I'm", "I'll"}, turn.text


def test_mandarin_texts_are_chinese_characters_only():
    for _, turns in _dialogues("zh"):
        for turn in turns:
            assert CJK.fullmatch(turn.text), turn.text


def test_espeak_reads_every_mandarin_character_as_mandarin():
    """Each character of the Mandarin lexicon is a known Mandarin syllable (no switch to English)."""
    lexicon = load_lexicon("zh")
    rng = random.Random(0)
    numbers = "".join(fn(rng) for fn in NUMBER_SLOTS["zh"].values() for _ in range(20))
    pools = load_lexicon("zh", 1.0).pools.values()
    words = [*lexicon.slots.values(), *lexicon.templates.values(), *(p for pool in pools for p in pool.parts),
             *(p for pool in pools for p in (pool.invented.head, pool.invented.tail, *pool.invented.unit))]
    chars = set("".join(CJK.findall(numbers + "".join(w for group in words for w in group))))
    engine = get_engine()
    for char in sorted(chars):
        phonemes = engine.phonemes(char, "cmn-latn-pinyin")
        assert phonemes and "(en)" not in phonemes and re.search(r"\d|ɜ", phonemes), (char, phonemes)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_keywords_hold_the_entities_and_absent_distractors(lang):
    lexicon = load_lexicon(lang)
    rng = random.Random(1)
    for _, turns in _dialogues(lang, count=10):
        for turn in turns:
            keywords = context_keywords(turn, lexicon, 4, rng)
            assert len(keywords) == len(turn.entities) + 4 == len(set(keywords))
            assert set(turn.entities) <= set(keywords)
            for distractor in set(keywords) - set(turn.entities):
                assert not lexicon.occurs(distractor, turn.text)


def test_texts_are_deterministic_in_the_seed():
    assert [[t.text for t in d] for _, d in _dialogues("en", 5, seed=3)] == \
        [[t.text for t in d] for _, d in _dialogues("en", 5, seed=3)]
    assert [[t.text for t in d] for _, d in _dialogues("zh", 5, seed=3)] != \
        [[t.text for t in d] for _, d in _dialogues("zh", 5, seed=4)]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_invented_names_practically_never_repeat_and_replace_listed_ones_at_their_share(lang):
    listed, invented = load_lexicon(lang, 0.0), load_lexicon(lang, 1.0)
    for kind, pool in listed.pools.items():
        names = {"".join(parts) for parts in itertools.product(*pool.parts)}
        rng = random.Random(0)
        assert all(pool.draw(rng) in names for _ in range(200))
        rng = random.Random(0)
        drawn = [invented.pools[kind].draw(rng) for _ in range(1000)]
        assert len(set(drawn)) >= 950, (kind, drawn[:20])  # a space of millions
        assert sum(name in names for name in drawn) <= 10
        half = load_lexicon(lang, 0.5).pools[kind]
        rng = random.Random(1)
        share = sum(half.draw(rng) not in names for _ in range(2000)) / 2000
        assert 0.45 < share < 0.55, (kind, share)


def test_invented_names_look_like_names_of_their_language():
    rng = random.Random(0)
    for kind, pool in load_lexicon("en", 1.0).pools.items():
        for _ in range(300):
            name = pool.draw(rng)
            assert re.fullmatch(r"[A-Z][a-z]{2,}", name), (kind, name)
    surnames = set(read_word_list("surnames_zh.txt"))
    lexicon = load_lexicon("zh", 1.0)
    for _ in range(300):
        name, place = lexicon.pools["name"].draw(rng), lexicon.pools["place"].draw(rng)
        assert CJK.fullmatch(name)
        assert any(name.startswith(s) and 1 <= len(name) - len(s) <= 2 for s in surnames), name
        assert CJK.fullmatch(place) and len(place) == 3


@pytest.mark.parametrize("lang", LANGUAGES)
def test_listed_names_keeps_the_first_entries_of_each_name_list(lang):
    files = {"en": ("first_names_en", "last_names_en", "places_en"),
             "zh": ("surnames_zh", "given_names_zh", "places_zh")}[lang]
    kept = {name: set(read_word_list(f"{name}.txt")[:5]) for name in files}
    rng = random.Random(0)
    pools = load_lexicon(lang, 0.0, 5).pools
    drawn = [(kind, pool.draw(rng)) for _ in range(300) for kind, pool in pools.items()]
    if lang == "en":
        first, last, places = kept.values()
        allowed = {"first": first, "last": last, "place": places}
        assert all(name in allowed[kind] for kind, name in drawn)
        assert {name for kind, name in drawn if kind == "first"} == first  # every kept name is drawn
    else:
        surnames, given, places = kept.values()
        assert all(name in places for kind, name in drawn if kind == "place")
        assert all(name[:1] in surnames and name[1:] in given for kind, name in drawn if kind == "name")


@pytest.mark.parametrize("count", [0, -3, 2.5, True])
def test_listed_names_must_be_a_positive_integer(count):
    with pytest.raises(ValueError, match="listed_names must be a positive integer"):
        load_lexicon("en", 0.0, count)


def test_a_share_outside_zero_one_is_an_error():
    with pytest.raises(ValueError, match="invented_names must be a probability"):
        load_lexicon("en", -0.1)
