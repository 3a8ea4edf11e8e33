"""The corpus' ``voices`` config: a bad entry (partial, unknown keys, a voice of another language, a
language the corpus does not build) fails before any work with every problem named and counted, through
``build_corpus`` and through ``seed-asr corpus``; a good one builds every utterance with its voices."""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from seed_asr.corpus.build import build_corpus
from seed_asr.corpus.voices import DEFAULT_VOICES, Speaker, voice_spaces

RANGES = {"rates": [150, 170], "pitches": [40, 60]}
EN = {"accents": ["en-us", "en-gb"], "variants": ["", "m3"], **RANGES}
ZH = {"accents": ["cmn-latn-pinyin"], "variants": ["", "f2"], **RANGES}
SMALL = {"num_utterances": 6, "splits": {"train": 1.0}, "num_workers": 0, "shard_size": 100}


@pytest.mark.parametrize(
    ("voices", "languages", "problems"),
    [
        ({"en": {"accents": ["en-us"]}}, ["en", "zh"],
         [r"voices\.en: .*missing \['variants', 'rates', 'pitches'\]"]),
        ({"en": {**EN, "accent": ["en-us"]}}, ["en", "zh"], [r"voices\.en: .*unknown \['accent'\]"]),
        ({"zh": {**ZH, "accents": ["cmn", "en-us", "en-gb"]}}, ["en", "zh"],
         [r"voices\.zh\.accents: \['en-us', 'en-gb'\] are espeak-ng voices of another language than 'zh'"]),
        ({"en": {**EN, "accents": ["cmn-latn-pinyin"]}}, ["en"],
         [r"voices\.en\.accents: \['cmn-latn-pinyin'\] are .* another language than 'en'"]),
        ({"zh": ZH}, ["en"], [r"voices\.zh: the corpus does not build 'zh' \(languages: \['en'\]\)"]),
        ({"en": {**EN, "rates": [200, 100]}}, ["en"], [r"voices\.en: VoiceSpace rates must satisfy"]),
        ({"en": None}, ["en"], [r"voices\.en: .*must be a mapping"]),
        # every problem at once, each named
        ({"en": {"accents": ["en-us"]}, "zh": {**ZH, "accents": ["en-us"]}, "fr": ZH}, ["en", "zh"],
         [r"voices\.fr: the corpus does not build", r"voices\.en: .*missing",
          r"voices\.zh\.accents: \['en-us'\]"]),
    ],
)
def test_bad_voices_fail_before_any_work_naming_every_problem(
    tmp_path: Path, voices: dict[str, Any], languages: list[str], problems: list[str]
) -> None:
    with pytest.raises(ValueError) as raised:
        build_corpus(tmp_path / "out", languages=languages, voices=voices, **SMALL)
    message = str(raised.value)
    assert f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in voices" in message
    for problem in problems:
        assert re.search(problem, message), (problem, message)
    assert not (tmp_path / "out").exists()


def test_espeak_voice_names_follow_the_corpus_languages() -> None:
    """The check reads espeak-ng's naming: English voices are en / en-*, Mandarin ones cmn / cmn-*."""
    assert voice_spaces({"zh": {**ZH, "accents": ["cmn", "cmn-latn-pinyin"]}})["zh"].accents[0] == "cmn"
    assert voice_spaces() == dict(DEFAULT_VOICES)  # the defaults pass their own check
    with pytest.raises(ValueError, match="another language than 'zh'"):
        voice_spaces({"zh": {**ZH, "accents": ["yue"]}})  # Cantonese reads the characters otherwise


def test_the_cli_says_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from seed_asr.cli import main

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    out = tmp_path / "corpus"
    with pytest.raises(SystemExit) as exited:
        main(["corpus", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'run'}", "num_utterances=4",
              "voices={en:{accents:[en-us]}}"])
    assert exited.value.code != 0
    assert "voices.en: " in capsys.readouterr().err
    assert not out.exists()


def test_good_voices_build_every_utterance_with_them(tmp_path: Path) -> None:
    stats = build_corpus(tmp_path, voices={"en": EN, "zh": ZH}, **SMALL)
    assert stats["utterances"] == SMALL["num_utterances"]
    spaces = {"en": EN, "zh": ZH}
    records = []
    for shard in sorted((tmp_path / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            records += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(records) == SMALL["num_utterances"]
    for record in records:
        speaker = Speaker.parse(record["speaker"])
        assert speaker.voice in spaces[record["lang"]]["accents"]
        assert speaker.variant in spaces[record["lang"]]["variants"]
