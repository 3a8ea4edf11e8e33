"""Context mixtures of context SFT and the irrelevant contexts of eval sets (seed_asr.data.contexts)."""

import random

import pytest

from seed_asr.corpus.texts import invent_entity
from seed_asr.data.contexts import (
    check_fractions,
    distractor_context,
    irrelevant_contexts,
    keyword_occurs,
    mix_contexts,
    rename_entities,
)
from seed_asr.metrics.wer import hallucinated_keywords
from seed_asr.text.prompts import PromptBuilder
from seed_asr.text.tokenizer import train_tokenizer


def record(key: str, text: str, dialogue: str, history: str, keywords: list, entities: list) -> dict:
    return {
        "__key__": key,
        "text": text,
        "lang": "en",
        "dialogue": dialogue,
        "context": {"history": history, "keywords": keywords, "entities": entities},
    }


METAS = [
    record("a0", "call Anneliese Okonkwo", "d0", "", ["Okonkwo", "Brandvold", "Anneliese"], ["Anneliese"]),
    record("a1", "text Okonkwo I am late", "d0", "call Anneliese Okonkwo", ["Okonkwo", "Ilse"], ["Okonkwo"]),
    record("b0", "drive to Tromsø", "d1", "", ["Tromsø", "Brandvold", "Okonkwo"], ["Tromsø"]),
    record("c0", "play music", "d2", "drive to Tromsø", ["Vasquez"], []),
]


def test_fractions_are_validated_with_clear_errors():
    assert check_fractions({"relevant": 0.25, "none": 0.75}) == {"relevant": 0.25, "none": 0.75}
    with pytest.raises(ValueError, match="unknown kinds \\['wrong'\\]"):
        check_fractions({"relevant": 0.5, "wrong": 0.5})
    with pytest.raises(ValueError, match=">= 0"):
        check_fractions({"relevant": 1.5, "none": -0.5})
    with pytest.raises(ValueError, match="sum to 1"):
        check_fractions({"relevant": 0.5, "none": 0.2})


def test_single_kind_mixtures():
    rng = random.Random(0)
    assert mix_contexts(METAS, {"relevant": 1.0}, rng) == [m["context"] for m in METAS]
    assert mix_contexts(METAS, {"none": 1.0}, rng) == [None] * 4
    distractors = mix_contexts(METAS, {"distractors": 1.0}, rng)
    expected = [["Brandvold"], ["Ilse"], ["Brandvold", "Okonkwo"], ["Vasquez"]]
    assert [c["keywords"] for c in distractors] == expected
    assert all(c["history"] == "" for c in distractors)


def from_another_dialogue(context: dict, meta: dict) -> bool:
    """context is the history and the absent keywords of an utterance of another dialogue."""
    text = meta["text"]
    return any(
        context["history"] == d["context"]["history"]
        and context["keywords"] == [k for k in d["context"]["keywords"] if not keyword_occurs(k, text)]
        for d in METAS
        if d["dialogue"] != meta["dialogue"]
    )


def test_irrelevant_context_comes_from_another_dialogue_without_this_utterances_words():
    for seed in range(20):
        contexts = mix_contexts(METAS, {"irrelevant": 1.0}, random.Random(seed))
        assert all(from_another_dialogue(c, m) for c, m in zip(contexts, METAS, strict=True))
    # a0 and a1 say Okonkwo: b0's list, their only donor, loses it
    contexts = mix_contexts(METAS[:3], {"irrelevant": 1.0}, random.Random(1))
    assert contexts[0]["keywords"] == contexts[1]["keywords"] == ["Tromsø", "Brandvold"]


def test_irrelevant_falls_back_to_distractors_when_the_batch_has_one_dialogue():
    contexts = mix_contexts(METAS[:2], {"irrelevant": 1.0}, random.Random(0))
    assert contexts == [distractor_context(m) for m in METAS[:2]]


def test_kinds_are_drawn_per_sample_with_the_fractions_and_deterministically():
    metas = METAS * 100
    fractions = {"relevant": 0.5, "none": 0.3, "distractors": 0.2}
    contexts = mix_contexts(metas, fractions, random.Random(7))
    assert contexts == mix_contexts(metas, fractions, random.Random(7))
    assert contexts != mix_contexts(metas, fractions, random.Random(8))
    none = sum(c is None for c in contexts) / len(metas)
    relevant = sum(c == m["context"] for c, m in zip(contexts, metas, strict=True)) / len(metas)
    assert abs(none - 0.3) < 0.07 and abs(relevant - 0.5) < 0.07


def test_eval_set_irrelevant_contexts_are_deterministic_and_from_other_dialogues():
    table = irrelevant_contexts(METAS, seed=3)
    assert table == irrelevant_contexts(list(reversed(METAS)), seed=3)
    assert set(table) == {m["__key__"] for m in METAS}
    assert all(from_another_dialogue(table[m["__key__"]], m) for m in METAS)
    with pytest.raises(ValueError, match="no other dialogue"):
        irrelevant_contexts(METAS[:2])


def test_keyword_occurs_and_hallucinated_keywords_follow_the_wer_normaliser():
    assert keyword_occurs("okonkwo", "Call OKONKWO, please.")
    assert not keyword_occurs("Okon", "call Okonkwo")
    assert keyword_occurs("Anne Marie", "text anne marie now") and not keyword_occurs("Anne Marie", "anne")
    # Brandvold twice but once in the reference: 1; Ilse never shown: 0; Okonkwo as in ref: 0
    hyp, ref = "call Brandvold Okonkwo Brandvold Ilse", "call Brandvold Okonkwo"
    assert hallucinated_keywords(hyp, ref, ["Brandvold", "Okonkwo", "brandvold"]) == 1
    assert hallucinated_keywords("今天北京", "今天", ["北京"], lang="zh") == 1


def test_prompt_shows_a_title_within_the_context_budget():
    tokenizer = train_tokenizer(["call okonkwo", "weekly budget meeting"] * 3, vocab_size=300, kind="char")
    context = {"title": "weekly budget meeting", "history": "hello there", "keywords": ["okonkwo"]}
    builder = PromptBuilder(tokenizer, max_context_tokens=200)
    assert builder.context_text(context) == (
        "<|title|>weekly budget meeting<|history|>hello there<|keywords|>okonkwo"
    )
    room = builder._n_tokens("<|keywords|>okonkwo") + 5  # not enough for the title
    tight = PromptBuilder(tokenizer, max_context_tokens=room)
    untitled = {k: v for k, v in context.items() if k != "title"}
    assert tight.context_text(context) == tight.context_text(untitled) != ""
    assert "<|title|>" not in tight.context_text(context)


def test_renamed_entities_change_in_the_transcript_hot_words_and_history_alike():
    new = iter(["Zubrato", "Kelvash"])
    context = {"history": "ask anneliese about Okonkwo's car",
               "keywords": ["Okonkwo", "Brandvold", "Anneliese"], "entities": ["Anneliese", "Okonkwo"]}
    text, renamed = rename_entities("call Anneliese Okonkwo, Okonkwo's phone", context,
                                    ["Anneliese", "Okonkwo"], "en", lambda: next(new))
    assert text == "call Zubrato Kelvash, Kelvash's phone"
    assert renamed == {"history": "ask Zubrato about Kelvash's car",
                       "keywords": ["Kelvash", "Brandvold", "Zubrato"], "entities": ["Zubrato", "Kelvash"]}
    assert context["keywords"][0] == "Okonkwo"  # the record's own context is left as it was
    # whole words only (English); no context: the transcript alone
    renamed_alone = rename_entities("Okonkwos and Okonkwo", None, ["Okonkwo"], "en", lambda: "X")
    assert renamed_alone == ("Okonkwos and X", None)
    # Mandarin: anywhere in the text; a longer name before one inside it
    zh_context = {"keywords": ["王涵远", "王涵"], "history": ""}
    new_zh = iter(["甲", "乙丙"])
    zh = rename_entities("给王涵远打电话", zh_context, ["王涵", "王涵远"], "zh", lambda: next(new_zh))
    assert zh == ("给乙丙打电话", {"keywords": ["乙丙", "甲"], "history": ""})


def test_invented_entities_are_new_names_of_the_language():
    rng = random.Random(0)
    english = [invent_entity("en", rng) for _ in range(200)]
    assert all(name[:1].isupper() and name.isalpha() for name in english)
    assert len(set(english)) > 190  # names from a space of millions
    mandarin = [invent_entity("zh", rng) for _ in range(50)]
    assert all(2 <= len(name) <= 5 and all("\u4e00" <= c <= "\u9fff" for c in name) for name in mandarin)
