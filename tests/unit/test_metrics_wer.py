import math

import pytest

from seed_asr.metrics import WERAccumulator, utterance_counts, weighted_wer
from seed_asr.metrics.wer import substitution_pairs, train_count_bucket
from seed_asr.text.units import NORMALIZER_NAME, scoring_units

KEYWORDS = ["Anneliese", "Okonkwo", "Brandvold"]
# One substitution of a keyword word, one inserted distractor keyword; both biased.
HYP_1, REF_1 = "call annalise okonkwo brandvold now", "Call Anneliese Okonkwo, now!"
# One deleted non-keyword word.
HYP_2, REF_2 = "send budget", "Send the budget."


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("Hello, Mr. Smith! It's twenty-five dollars.", ["hello", "mister", "smith", "it", "is", "$25"]),
        ("The colour of the theatre", ["the", "color", "of", "the", "theater"]),
        ("Um, I've got it.", ["i", "have", "got", "it"]),
    ],
)
def test_english_uses_whisper_normaliser(text, units):
    assert scoring_units(text, "en") == units


def test_english_normalisation_makes_spelling_variants_correct():
    counts = utterance_counts(
        "hello mister smith it is $25", "Hello, Mr. Smith! It's twenty-five dollars.", "en"
    )
    assert (counts.errors, counts.ref_units) == (0, 6)


def test_mandarin_units_are_characters_with_latin_words():
    assert scoring_units("我爱北京，天安门。", "zh") == list("我爱北京天安门")
    assert scoring_units("播放Taylor Swift的歌！", "zh") == ["播", "放", "taylor", "swift", "的", "歌"]
    assert scoring_units("２０２４年", "zh") == ["2024", "年"]  # full-width digits folded


def test_mandarin_cer_ignores_punctuation_and_spaces():
    counts = utterance_counts("我爱 北京天安们", "我爱北京，天安门。", "zh")
    assert (counts.errors, counts.substitutions, counts.ref_units) == (1, 1, 7)
    counts = utterance_counts("播放 taylor 的歌。", "播放Taylor Swift的歌", "zh")
    assert (counts.errors, counts.deletions, counts.ref_units) == (1, 1, 6)


def test_biased_and_unbiased_counts_by_hand():
    first = utterance_counts(HYP_1, REF_1, "en", KEYWORDS)
    assert (first.substitutions, first.insertions, first.deletions) == (1, 1, 0)
    assert (first.biased_errors, first.biased_ref, first.unbiased_errors, first.unbiased_ref) == (2, 2, 0, 2)
    assert (first.keywords_recalled, first.keywords_in_ref) == (1, 2)
    second = utterance_counts(HYP_2, REF_2, "en", ["Brandvold"])
    assert (second.biased_errors, second.biased_ref, second.unbiased_errors, second.unbiased_ref) == (
        0,
        0,
        1,
        3,
    )


def test_multiword_keyword_is_one_occurrence():
    keyword = ["Anneliese Okonkwo"]
    missed = utterance_counts("call annalise okonkwo now", "call Anneliese Okonkwo now", "en", keyword)
    assert (missed.keywords_recalled, missed.keywords_in_ref, missed.biased_ref, missed.biased_errors) == (
        0,
        1,
        2,
        1,
    )
    hit = utterance_counts("call anneliese okonkwo now", "call Anneliese Okonkwo now", "en", keyword)
    assert (hit.keywords_recalled, hit.keywords_in_ref, hit.errors) == (1, 1, 0)


def test_weighted_wer_by_hand():
    assert weighted_wer(HYP_1, REF_1, KEYWORDS, keyword_weight=3.0) == pytest.approx(
        (3 * 2 + 0) / (3 * 2 + 2)
    )
    assert weighted_wer(HYP_1, REF_1, KEYWORDS, keyword_weight=1.0) == pytest.approx(2 / 4)
    assert weighted_wer(HYP_2, REF_2, ["Brandvold"], keyword_weight=3.0) == pytest.approx(1 / 3)
    assert weighted_wer(REF_1, REF_1, KEYWORDS) == 0.0
    assert weighted_wer(
        "播放歌", "播放Taylor的歌", ["Taylor"], keyword_weight=2.0, lang="zh"
    ) == pytest.approx((2 * 1 + 1) / (2 * 1 + 4))
    with pytest.raises(ValueError, match="keyword_weight"):
        weighted_wer(HYP_1, REF_1, KEYWORDS, keyword_weight=-1.0)


def test_accumulator_metrics_and_breakdowns():
    acc = WERAccumulator(group_by=("domain", "speaker"))
    acc.update(HYP_1, REF_1, {"lang": "en", "domain": "contacts", "speaker": "en-gb"}, KEYWORDS)
    acc.update(HYP_2, REF_2, {"lang": "en", "domain": "office", "speaker": "en-us"}, ["Brandvold"])
    acc.update("我爱北京天安们", "我爱北京，天安门。", {"lang": "zh", "domain": "office"})
    m = acc.compute()
    assert m["wer"] == pytest.approx((2 + 1 + 1) / (4 + 3 + 7))
    assert m["wer/en"] == pytest.approx(3 / 7)
    assert m["cer/zh"] == pytest.approx(1 / 7)
    assert m["wer/domain/contacts"] == pytest.approx(2 / 4)
    assert m["wer/domain/office"] == pytest.approx(2 / 10)
    assert m["wer/speaker/en-us"] == pytest.approx(1 / 3)
    assert "wer/speaker/None" not in m and len([k for k in m if k.startswith("wer/speaker/")]) == 2
    assert (m["num_utts"], m["num_ref_units"], m["num_utts/zh"], m["num_ref_units/en"]) == (3, 14, 1, 7)
    assert m["b_wer"] == pytest.approx(2 / 2)
    assert m["u_wer"] == pytest.approx(2 / (2 + 3 + 7))
    assert m["keyword_recall"] == pytest.approx(1 / 2)
    assert "b_wer/zh" not in m  # no keywords given for Mandarin
    assert m["normalizer"] == NORMALIZER_NAME
    acc.reset()
    assert acc.compute()["num_utts"] == 0 and math.isnan(acc.compute()["wer"])


def test_empty_reference_counts_insertions():
    counts = utterance_counts("uh hello there", "", "en")
    assert (counts.insertions, counts.ref_units) == (2, 0)


def test_keyword_recall_of_heard_and_unheard_names():
    acc = WERAccumulator(heard_names=["anneliese"])  # casefolded, as the keywords are matched
    ref = "call Anneliese Okonkwo and Brandvold"
    keywords = ["Anneliese", "Okonkwo", "Brandvold"]
    acc.update("call anneliese okonkwa and brandvold", ref, {"lang": "en"}, keywords)
    acc.update("text Zubrato", "text Zubrato", {"lang": "en"}, ["Zubrato", "Kelvash"])  # Kelvash not said
    m = acc.compute()
    assert (m["keyword_recall/heard"], m["num_keywords_in_ref/heard"]) == (1.0, 1)
    # unheard: Okonkwo missed, Brandvold and Zubrato recalled
    assert (m["keyword_recall/unheard"], m["num_keywords_in_ref/unheard"]) == (pytest.approx(2 / 3), 3)
    assert m["keyword_recall"] == pytest.approx(3 / 4)
    assert "keyword_recall/heard" not in WERAccumulator().compute()


def test_reference_units_scored_by_how_often_training_transcripts_hold_them():
    # keyed by scoring units: "five" is "5"
    counts = {("en", "call"): 250, ("en", "anneliese"): 3, ("en", "at"): 40, ("en", "5"): 120,
              ("zh", "给"): 12, ("zh", "打"): 100}  # fmt: skip
    acc = WERAccumulator(train_unit_counts=counts)
    # "anneliese" substituted (1-9), "at" deleted (10-99), "okonkwo" never heard and right (0),
    # the inserted "uh" has no reference unit
    acc.update("uh call annalisa okonkwo five", "call Anneliese Okonkwo at five", {"lang": "en"})
    acc.update("给李打", "给王打", {"lang": "zh"})  # 王 (never heard) substituted; 给 and 打 right
    m = acc.compute()
    expected = {"en": {"0": (0, 1), "1-9": (1, 1), "10-99": (1, 1), "100+": (0, 2)},
                "zh": {"0": (1, 1), "10-99": (0, 1), "100+": (0, 1)}}  # fmt: skip
    for lang, buckets in expected.items():
        for bucket, (errors, units) in buckets.items():
            assert m[f"num_ref_units/{lang}/train_count_{bucket}"] == units
            assert m[f"unit_error/{lang}/train_count_{bucket}"] == pytest.approx(errors / units)
    assert "unit_error/zh/train_count_1-9" not in m
    assert [train_count_bucket(n) for n in (0, 1, 9, 10, 99, 100, 10**6)] == ["0", "1-9", "1-9", "10-99",
                                                                            "10-99", "100+", "100+"]
    assert not any(k.startswith("unit_error/") for k in WERAccumulator().compute())


def test_substitution_pairs_follow_the_alignment():
    assert substitution_pairs("uh call annalisa at five", "call Anneliese Okonkwo at 5", "en") == [
        ("anneliese", "annalisa")  # "okonkwo" deleted, "uh" inserted, "five" normalised to "5"
    ]
    assert substitution_pairs("给林打电", "给王打电话", "zh") == [("王", "林")]
