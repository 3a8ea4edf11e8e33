"""Shard writing and conversion of a JSONL manifest / LibriSpeech folder into shards."""

import io
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.data.shards import SplitWriter, check_record, convert_librispeech, convert_manifest, make_record


def _tone(seconds, sr, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _read_split(folder):
    urls = sorted(str(p) for p in folder.glob("shard-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    return {s["__key__"]: (sf.read(io.BytesIO(s["flac"])), sf.info(io.BytesIO(s["flac"])),
                           json.loads(s["json"])) for s in samples}


def test_manifest_conversion_skips_and_names_bad_entries(tmp_path, caplog):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "a.wav", _tone(1.0, 22050, channels=2), 22050)  # stereo at 22.05 kHz
    sf.write(audio / "sub" / "b.flac", _tone(0.5, SAMPLE_RATE), SAMPLE_RATE)
    sf.write(tmp_path / "c.flac", _tone(0.25, 8000), 8000)
    (audio / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    lines = [
        {"audio_filepath": "audio/a.wav", "text": "call Anneliese", "duration": 9.9, "lang": "en",
         "context": {"history": "hello", "keywords": ["Anneliese", "Brandvold"], "entities": ["Anneliese"]}},
        {"audio_filepath": "audio/sub/b.flac", "text": "给张子涵打电话", "lang": "zh", "domain": "contacts",
         "speaker": "s1", "dialogue": "d1"},
        {"audio_filepath": str(tmp_path / "c.flac"), "text": "absolute path"},
        {"audio_filepath": "audio/missing.wav", "text": "gone"},
        {"audio_filepath": "audio/corrupt.wav", "text": "broken"},
        {"audio_filepath": "audio/a.wav"},
        {"audio_filepath": "audio/a.wav", "text": "bad context", "context": {"keywords": "x"}},
    ]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="seed_asr.data.shards"):
        summary = convert_manifest(manifest, tmp_path / "out", split="train", shard_size=2, num_workers=0)

    assert (summary.written, summary.skipped, summary.shards) == (3, 5, 2)
    warnings = caplog.text
    assert "missing.wav" in warnings and "corrupt.wav" in warnings
    assert f"{manifest}:6" in warnings and f"{manifest}:7" in warnings and f"{manifest}:8" in warnings
    samples = _read_split(tmp_path / "out" / "train")
    assert len(samples) == 3 and summary.hours == pytest.approx(1.75 / 3600, abs=1e-6)
    by_text = {record["text"]: (wave, info, record) for (wave, _), info, record in samples.values()}
    wave, info, record = by_text["call Anneliese"]
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert record["duration"] == pytest.approx(wave.size / SAMPLE_RATE, abs=1e-3)
    assert record["duration"] == pytest.approx(1.0, abs=1e-3)
    assert record["context"] == lines[0]["context"]
    assert (record["lang"], record["domain"]) == ("en", "manifest")
    _, _, record = by_text["给张子涵打电话"]
    fields = (record["lang"], record["domain"], record["speaker"], record["dialogue"])
    assert fields == ("zh", "contacts", "s1", "d1")
    assert record["context"] == {"history": "", "keywords": [], "entities": []}
    for _, _, record in samples.values():
        check_record(record)


def test_librispeech_conversion(tmp_path, caplog):
    chapter = tmp_path / "ls" / "19" / "198"
    chapter.mkdir(parents=True)
    (chapter / "19-198.trans.txt").write_text(
        "19-198-0000 NORTHANGER ABBEY\n19-198-0001 MISSING AUDIO\n19-198-0002 CORRUPT AUDIO\n",
        encoding="utf-8",
    )
    sf.write(chapter / "19-198-0000.flac", _tone(0.8, SAMPLE_RATE), SAMPLE_RATE)
    (chapter / "19-198-0002.flac").write_bytes(b"fLaC\x00garbage")
    other = tmp_path / "ls" / "26" / "495"
    other.mkdir(parents=True)
    (other / "26-495.trans.txt").write_text("26-495-0004 CHAPTER ONE\n", encoding="utf-8")
    sf.write(other / "26-495-0004.flac", _tone(0.4, SAMPLE_RATE), SAMPLE_RATE)

    with caplog.at_level(logging.WARNING, logger="seed_asr.data.shards"):
        summary = convert_librispeech(tmp_path / "ls", tmp_path / "out", split="dev", num_workers=0)

    assert (summary.written, summary.skipped) == (2, 2)
    assert "19-198-0001.flac" in caplog.text and "19-198-0002.flac" in caplog.text
    assert any("19-198-0002.flac" in item for item in summary.skipped_items)
    samples = _read_split(tmp_path / "out" / "dev")
    assert set(samples) == {"19-198-0000", "26-495-0004"}
    (wave, _), _, record = samples["19-198-0000"]
    assert record == make_record(text="NORTHANGER ABBEY", lang="en", domain="librispeech", speaker="19",
                                 duration=0.8, dialogue="19-198")
    assert wave.size == int(0.8 * SAMPLE_RATE)


def test_conversion_of_a_folder_that_is_not_librispeech_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a LibriSpeech folder"):
        convert_librispeech(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="manifest"):
        convert_manifest(tmp_path / "none.jsonl", tmp_path / "out")


def test_conversion_in_worker_processes_matches(tmp_path):
    for i in range(4):
        sf.write(tmp_path / f"{i}.wav", _tone(0.2 + 0.1 * i, 22050), 22050)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": f"{i}.wav", "text": f"utterance {i}"}) + "\n"
                                for i in range(4)))
    convert_manifest(manifest, tmp_path / "serial", num_workers=0)
    convert_manifest(manifest, tmp_path / "parallel", num_workers=2, shard_size=1000)
    assert (tmp_path / "serial/train/shard-000000.tar").read_bytes() == \
        (tmp_path / "parallel/train/shard-000000.tar").read_bytes()


def test_split_writer_guards_keys_and_existing_shards(tmp_path):
    record = make_record(text="hi", lang="en", domain="d", speaker="s", duration=0.5)
    with SplitWriter(tmp_path, "train", shard_size=10) as writer:
        with pytest.raises(ValueError, match="sample key 'a.b'"):
            writer.write("a.b", b"", record)
        writer.write("a-b_1", b"", record)
    with pytest.raises(FileExistsError, match="overwrite"):
        SplitWriter(tmp_path, "train", shard_size=10)
    SplitWriter(tmp_path, "train", shard_size=10, overwrite=True).close()
    assert not list((tmp_path / "train").glob("*.tar"))
    with pytest.raises(ValueError, match="shard_size"):
        SplitWriter(tmp_path, "dev", shard_size=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"text": " "}, "text is empty"),
        ({"duration": 0}, "duration"),
        ({"lang": 1}, "'lang' must be a string"),
        ({"context": {"history": ""}}, "context must have"),
        ({"context": {"history": "", "keywords": "ab", "entities": []}}, "keywords must be a list"),
        ({"extra": 1}, "keys"),
        ({"phonemes": ["h", "a"]}, "phonemes must be a string"),
    ],
)
def test_check_record_names_the_problem(change, message):
    record = {**make_record(text="hi", lang="en", domain="d", speaker="s", duration=0.5), **change}
    with pytest.raises(ValueError, match=message):
        check_record(record)
