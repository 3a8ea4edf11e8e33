"""Building the built-in corpus end to end: shards, records, audio, determinism, entry points."""

import inspect
import io
import json
import re
import runpy
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds
from hydra import compose, initialize_config_dir

from seed_asr.corpus import build
from seed_asr.corpus.build import build_corpus
from seed_asr.corpus.synth import get_engine
from seed_asr.corpus.texts import load_lexicon, read_word_list
from seed_asr.corpus.voices import Speaker, voice_spaces
from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.data.shards import check_record
from seed_asr.demo.pipeline import prepare_corpus

CONF = Path(__file__).resolve().parents[2] / "conf"
SETTINGS = {"num_utterances": 50, "seed": 7, "shard_size": 20, "lang_weights": {"en": 0.6, "zh": 0.4},
            "splits": {"train": 0.8, "dev": 0.1, "test": 0.1}}
HELDOUT_SPLITS = {"train": 0.8, "test": 0.1, "heldout": 0.1}


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _samples(folder):
    out = {}
    for split in ("train", "dev", "test"):
        urls = sorted(str(p) for p in (folder / split).glob("shard-*.tar"))
        if not urls:
            continue
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            wave, sr = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
            info = sf.info(io.BytesIO(sample["flac"]))
            out[sample["__key__"]] = (split, wave, sr, info, json.loads(sample["json"]))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "RENDER_BLOCK", 16)  # several blocks, so that both workers synthesise
        stats = build_corpus(folder / "parallel", num_workers=2, **SETTINGS)
        build_corpus(folder / "serial", num_workers=0, **SETTINGS)
    return folder, stats


def test_same_seed_gives_byte_identical_corpora_whatever_the_workers(corpus):
    folder, _ = corpus
    parallel, serial = _files(folder / "parallel"), _files(folder / "serial")
    assert parallel.keys() == serial.keys() and "stats.json" in parallel
    assert all(parallel[name] == serial[name] for name in parallel)
    train = sorted(name for name in parallel if name.startswith("train/"))
    assert train == ["train/shard-000000.tar", "train/shard-000001.tar"]


def test_records_follow_the_contract_and_match_their_audio(corpus):
    samples = _samples(corpus[0] / "parallel")
    assert len(samples) == 50
    for key, (_, wave, sr, info, record) in samples.items():
        check_record(record)
        assert re.fullmatch(r"d\d{6}_\d", key) and record["dialogue"] == key.split("_")[0]
        assert (sr, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert record["duration"] == pytest.approx(wave.size / SAMPLE_RATE, abs=1e-3)
        assert 0.3 < record["duration"] < 15
        assert float(np.sqrt(np.mean(wave**2))) > 0.02  # speech, not silence
        speaker = Speaker.parse(record["speaker"])
        assert speaker.voice in voice_spaces()[record["lang"]].accents
        assert record["phonemes"] == get_engine().phonemes(record["text"], speaker.espeak_voice)
        lexicon = load_lexicon(record["lang"])
        context = record["context"]
        assert set(context["entities"]) <= set(context["keywords"])
        assert all(lexicon.occurs(e, record["text"]) for e in context["entities"])
        distractors = set(context["keywords"]) - set(context["entities"])
        assert not any(lexicon.occurs(k, record["text"]) for k in distractors)
        if record["lang"] == "zh":
            assert re.fullmatch(r"[\u4e00-\u9fff]+", record["text"])


def test_splits_are_disjoint_and_dialogues_whole(corpus):
    samples = _samples(corpus[0] / "parallel")
    text_splits, dialogue_splits = defaultdict(set), defaultdict(set)
    turns = defaultdict(dict)
    for key, (split, *_, record) in samples.items():
        text_splits[record["text"]].add(split)
        dialogue_splits[record["dialogue"]].add(split)
        turns[record["dialogue"]][int(key.split("_")[1])] = record
    assert all(len(s) == 1 for s in text_splits.values())
    assert all(len(s) == 1 for s in dialogue_splits.values())
    for dialogue in turns.values():
        ordered = [dialogue[i] for i in range(len(dialogue))]
        assert [r["context"]["history"] for r in ordered] == ["", *(r["text"] for r in ordered[:-1])]
    assert Counter(split for split, *_ in samples.values()) == {"train": 40, "dev": 5, "test": 5}


def test_stats_describe_the_shards(corpus):
    folder, stats = corpus
    assert json.loads((folder / "parallel" / "stats.json").read_text()) == stats
    samples = _samples(folder / "parallel")
    assert stats["utterances"] == 50 and stats["seed"] == 7
    assert stats["hours"] == pytest.approx(sum(r["duration"] for *_, r in samples.values()) / 3600, abs=1e-3)
    for split in ("train", "dev", "test"):
        records = [r for s, *_, r in samples.values() if s == split]
        numbers = stats["splits"][split]
        assert numbers["utterances"] == len(records)
        assert numbers["distinct_texts"] == len({r["text"] for r in records})
        for group, of_record in (
            ("domain", lambda r: r["domain"]),
            ("lang", lambda r: r["lang"]),
            ("accent", lambda r: Speaker.parse(r["speaker"]).voice),
        ):
            counted = {key: value["utterances"] for key, value in numbers[group].items()}
            assert counted == Counter(map(of_record, records)), group


def test_noise_is_added_at_the_requested_snr(tmp_path):
    small = {**SETTINGS, "num_utterances": 6, "splits": {"train": 1.0}, "num_workers": 0}
    build_corpus(tmp_path / "clean", **small)
    build_corpus(tmp_path / "noisy", noise_snr_db=5.0, noise_color="pink", **small)
    clean, noisy = _samples(tmp_path / "clean"), _samples(tmp_path / "noisy")
    assert clean.keys() == noisy.keys()
    for key, (_, speech, *_, record) in clean.items():
        noisy_wave, noisy_record = noisy[key][1], noisy[key][4]
        assert noisy_record == record
        noise = noisy_wave.astype(np.float64) - speech
        snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2))
        assert snr == pytest.approx(5.0, abs=0.3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_utterances": -5}, "num_utterances must be a positive integer"),
        ({"languages": ["en", "fr"], "lang_weights": None}, "languages must be distinct names"),
        ({"lang_weights": {"en": 1.0}}, "lang_weights must give each language"),
        ({"domains": ["weather"]}, "domains must be names"),
        ({"splits": {"train": 0.9, "test": 0.2}}, "sum to 1"),
        ({"noise_color": "brown"}, "noise_color"),
        ({"invented_names": 1.5}, "invented_names must be a probability"),
        ({"listed_names": 0}, "listed_names must be a positive integer"),
        ({"voices": {"en": {"accents": ["en-mars"], "variants": [""], "rates": [150, 160],
                            "pitches": [40, 60]}}}, "unknown espeak-ng voice 'en-mars'"),
        ({"voices": {"zh": {"accents": ["cmn-latn-pinyin"], "variants": ["f9"], "rates": [150, 160],
                            "pitches": [40, 60]}}}, "unknown espeak-ng variant 'f9'"),
        ({"heldout_voices": {"en": {"variants": ["f4"]}}}, "'heldout' split .* and heldout_voices go"),
        ({"splits": {"train": 0.9, "heldout": 0.1}}, "'heldout' split .* and heldout_voices go"),
        ({"splits": HELDOUT_SPLITS, "heldout_voices": {"en": {"accents": ["en-mars"]}}},
         r"heldout_voices.en.accents: \['en-mars'\] are not among"),
        ({"splits": HELDOUT_SPLITS, "heldout_voices": {"zh": {"accents": ["cmn-latn-pinyin"]}}},
         "holds out every accent or every variant"),
        ({"splits": HELDOUT_SPLITS, "heldout_voices": {"en": {"variant": ["f4"]}}},
         "heldout_voices.en must be {accents"),
        ({"splits": HELDOUT_SPLITS, "heldout_voices": {"en": {"variants": "f4"}}},
         "heldout_voices.en must be {accents.*list of names"),
        ({"languages": ["en"], "lang_weights": None, "splits": HELDOUT_SPLITS,
          "heldout_voices": {"zh": {"variants": ["f4"]}}}, "names language 'zh', which the corpus does not"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        build_corpus(tmp_path / "out", **{**SETTINGS, **change})
    assert not (tmp_path / "out").exists()


def test_a_language_subset_takes_its_weight_from_the_mapping(tmp_path):
    stats = build_corpus(tmp_path, num_utterances=3, languages=["zh"], lang_weights={"en": 0.7, "zh": 0.3},
                         splits={"train": 1.0}, num_workers=0)
    assert stats["lang"].keys() == {"zh"} and stats["settings"]["lang_weights"] == {"zh": 0.3}


def test_existing_shards_are_not_overwritten_silently(tmp_path):
    small = {**SETTINGS, "num_utterances": 3, "splits": {"train": 1.0}, "num_workers": 0}
    build_corpus(tmp_path, **small)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_corpus(tmp_path, **small)
    build_corpus(tmp_path, overwrite=True, **small)


def test_config_composes_into_build_arguments():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("corpus", overrides=[
            "voices={en:{accents:[en-us],variants:['',m3],rates:[150,170],pitches:[40,60]}}"])
    parameters = inspect.signature(build_corpus).parameters
    assert set(cfg) - {"cmvn_utterances"} <= set(parameters)  # cmvn.json is written after the build
    assert cfg.out_dir == "data/corpus" and cfg.num_utterances == 2000
    assert voice_spaces(cfg.voices)["en"].variants == ("", "m3")


def _run_app(module, monkeypatch, tmp_path, *overrides):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [module, *overrides])
    runpy.run_module(module, run_name="__main__")


def test_corpus_entry_point_writes_under_the_working_directory(tmp_path, monkeypatch):
    _run_app("seed_asr.corpus", monkeypatch, tmp_path, "num_utterances=4", "num_workers=0",
             "splits.train=0.5", "splits.dev=0.25", "splits.test=0.25")
    for split in ("train", "dev", "test"):
        assert (tmp_path / f"data/corpus/{split}/shard-000000.tar").is_file()
    assert json.loads((tmp_path / "data/corpus/stats.json").read_text())["utterances"] == 4
    assert len(json.loads((tmp_path / "data/corpus/cmvn.json").read_text())["mean"]) == 80
    assert list((tmp_path / "outputs" / "corpus").glob("*/.hydra/config.yaml"))


def test_corpus_entry_point_rejects_bad_values(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _run_app("seed_asr.corpus", monkeypatch, tmp_path, "num_utterances=-1")
    assert "num_utterances must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_shards_entry_point_converts_a_manifest(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", np.full(8000, 0.1), SAMPLE_RATE)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "a.wav", "text": "hello"}) + "\n")
    _run_app("seed_asr.shards", monkeypatch, tmp_path, "input=m.jsonl", "split=dev", "num_workers=0")
    assert (tmp_path / "data/shards/dev/shard-000000.tar").is_file()


def test_demo_builds_its_corpus_from_its_config_once(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=["corpus.num_utterances=12", "corpus.invented_names=1.0",
                                         "cmvn_utterances=5"])
    corpus = prepare_corpus(tmp_path, cfg)
    stats = json.loads((corpus / "stats.json").read_text())
    assert stats["utterances"] == 12 and stats["settings"]["invented_names"] == 1.0
    assert (corpus / "cmvn.json").is_file()
    records = [r for *_, r in _samples(corpus).values()]
    listed = {w for name in ("first_names_en", "last_names_en", "places_en", "places_zh")
              for w in read_word_list(f"{name}.txt")}
    entities = [e for r in records for e in r["context"]["keywords"]]
    assert entities and not set(entities) & listed  # every name invented
    before = (corpus / "stats.json").stat().st_mtime_ns
    prepare_corpus(tmp_path, cfg)  # a resumed demo keeps its corpus
    assert (corpus / "stats.json").stat().st_mtime_ns == before
