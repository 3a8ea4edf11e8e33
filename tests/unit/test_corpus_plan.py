"""Planning of the built-in corpus: splits, dialogues, contexts (no audio)."""

import dataclasses
from collections import defaultdict

from seed_asr.corpus import build
from seed_asr.corpus.build import DEFAULT_SPLITS, HELDOUT_SPLIT, _split_targets, plan_corpus
from seed_asr.corpus.texts import DOMAINS, load_lexicon
from seed_asr.corpus.voices import held_out_voices, voice_spaces


def _plan(num=300, seed=0, domains=DOMAINS, splits=DEFAULT_SPLITS, invented=0.0, heldout=None):
    return plan_corpus(num, seed, ("en", "zh"), (0.6, 0.4), domains, splits, (2, 4), (2, 5), voice_spaces(),
                       invented, heldout)


def test_held_out_voices_speak_in_the_heldout_split_only():
    held = held_out_voices({"en": {"accents": ["en-029"], "variants": ["f4", "m7"]}})
    plan = _plan(1000, splits={"train": 0.85, "test": 0.05, HELDOUT_SPLIT: 0.1}, heldout=held)
    heldout = [utt for utt in plan if utt.split == HELDOUT_SPLIT]
    assert len(heldout) == 100
    assert {utt.lang for utt in heldout} == {"en"}  # zh has no held-out voices, so no heldout utterance
    for utt in plan:
        if utt.lang == "en":
            uses_held_voice = utt.speaker.voice == "en-029" or utt.speaker.variant in ("f4", "m7")
            assert uses_held_voice == (utt.split == HELDOUT_SPLIT), utt
    # both ways of being held out occur: a held-out accent, and a held-out variant of a trained accent
    assert any(utt.speaker.voice == "en-029" for utt in heldout)
    assert any(utt.speaker.voice != "en-029" for utt in heldout)


def test_no_held_out_voices_leave_the_plan_unchanged():
    assert _plan(heldout={}) == _plan()


def test_split_targets_sum_to_the_total():
    assert _split_targets(2000, DEFAULT_SPLITS) == {"train": 1800, "dev": 100, "test": 100}
    assert _split_targets(7, {"train": 0.5, "dev": 0.25, "test": 0.25}) == {"train": 3, "dev": 2, "test": 2}
    assert sum(_split_targets(11, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}).values()) == 11


def test_plan_fills_each_split_with_disjoint_texts_and_whole_dialogues():
    plan = _plan()
    counts = defaultdict(int)
    text_splits, dialogue_splits = defaultdict(set), defaultdict(set)
    for utt in plan:
        counts[utt.split] += 1
        text_splits[utt.text].add(utt.split)
        dialogue_splits[utt.dialogue].add(utt.split)
    assert dict(counts) == {"train": 270, "dev": 15, "test": 15}
    assert all(len(s) == 1 for s in text_splits.values())
    assert all(len(s) == 1 for s in dialogue_splits.values())
    assert len({utt.key for utt in plan}) == len(plan)


def test_dialogue_history_is_the_previous_turn():
    plan = _plan()
    by_dialogue = defaultdict(list)
    for utt in plan:
        by_dialogue[utt.dialogue].append(utt)
    for turns in by_dialogue.values():
        assert turns[0].history == ""
        assert [t.history for t in turns[1:]] == [t.text for t in turns[:-1]]
        assert len({(t.lang, t.domain, t.speaker) for t in turns}) == 1  # one domain, one speaker
        assert 1 <= len(turns) <= 4


def test_context_keywords_and_entities_are_consistent():
    for utt in _plan():
        lexicon = load_lexicon(utt.lang)
        assert set(utt.entities) <= set(utt.keywords)
        assert all(lexicon.occurs(e, utt.text) for e in utt.entities)
        assert not any(lexicon.occurs(k, utt.text) for k in set(utt.keywords) - set(utt.entities))
        assert 2 <= len(utt.keywords) - len(utt.entities) <= 5


def test_plan_is_deterministic_and_seed_dependent():
    assert _plan(seed=1) == _plan(seed=1)
    assert [u.text for u in _plan(seed=1)] != [u.text for u in _plan(seed=2)]


def test_plan_mixes_languages_domains_and_speakers():
    plan = _plan()
    assert {u.lang for u in plan} == {"en", "zh"} and {u.domain for u in plan} == set(DOMAINS)
    assert len({u.speaker.voice for u in plan if u.lang == "en"}) >= 5
    assert all(u.speaker.voice == "cmn-latn-pinyin" for u in plan if u.lang == "zh")



def test_no_invented_names_gives_the_corpus_of_the_word_lists(monkeypatch):
    """invented_names=0 draws exactly what a lexicon without invented names draws (earlier corpora)."""
    with_share_zero = _plan(invented=0.0)

    def lists_only(lang, share, listed_names):
        lexicon = load_lexicon(lang, share, listed_names)
        pools = {kind: dataclasses.replace(pool, invented=None) for kind, pool in lexicon.pools.items()}
        return dataclasses.replace(lexicon, pools=pools)

    monkeypatch.setattr(build, "load_lexicon", lists_only)
    assert _plan(invented=0.0) == with_share_zero
    monkeypatch.undo()
    assert [u.keywords for u in _plan(invented=0.5)] != [u.keywords for u in with_share_zero]
