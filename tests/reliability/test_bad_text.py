"""Bad text input: lines that are not UTF-8, huge transcripts, records with impossible fields and repeated
utterance ids are skipped, named and counted by every reader (conversion, the training and evaluation
readers, the LM stage's text, the record reader), and ``results.json`` says how many utterances its
scores leave out and why."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from seed_asr.data.datamodule import ShardDataModule
from seed_asr.data.records import iter_records
from seed_asr.data.shards import convert_librispeech, convert_manifest
from seed_asr.data.text_datamodule import TextDataModule
from seed_asr.testing.synthetic import synthetic_record
from tests.reliability.hostile import (
    clean_corpus,
    evaluate_shards,
    hyps,
    sample,
    train_tiny,
    wave,
    write_shard,
)

pytestmark = pytest.mark.usefixtures("one_thread")

HUGE = "call anna " * 10_000  # 100,000 characters


def test_manifest_lines_that_are_not_utf8_are_skipped_and_named(tmp_path: Path, caplog) -> None:
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", wave(0.5), 16000)
    lines = [json.dumps({"audio_filepath": f"{n}.wav", "text": f"utterance {n}"}).encode() for n in "abc"]
    lines.insert(1, b'{"audio_filepath": "b.wav", "text": "caf\xe9 latin-1"}')
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING):
        summary = convert_manifest(manifest, tmp_path / "out", num_workers=0)
    assert (summary.written, summary.skipped) == (3, 1)
    assert summary.skipped_items == [f"{manifest}:2: malformed manifest line (not UTF-8 text)"]
    assert f"{manifest}:2" in caplog.text


def test_librispeech_lines_that_are_not_utf8_and_repeated_ids_are_skipped_and_named(tmp_path: Path) -> None:
    chapter = tmp_path / "ls" / "19" / "198"
    chapter.mkdir(parents=True)
    for utt in ("19-198-0000", "19-198-0001"):
        sf.write(chapter / f"{utt}.flac", wave(0.5), 16000)
    transcript = chapter / "19-198.trans.txt"
    transcript.write_bytes(b"19-198-0000 FIRST\n19-198-0001 CAF\xc9\n19-198-0001 SECOND\n19-198-0000 AGAIN\n")
    summary = convert_librispeech(tmp_path / "ls", tmp_path / "out", num_workers=0)
    assert (summary.written, summary.skipped) == (2, 2)
    assert summary.skipped_items[0] == f"{transcript}:2: malformed transcript line (not UTF-8 text)"
    assert summary.skipped_items[1].startswith(f"{transcript}:4: duplicate of {transcript}:1")
    texts = {json.loads(s["json"])["text"] for s in wds.WebDataset(
        [str(tmp_path / "out" / "train" / "shard-000000.tar")], shardshuffle=False, empty_check=False)}
    assert texts == {"FIRST", "SECOND"}


def test_manifest_lines_repeating_an_utterance_keep_the_first(tmp_path: Path, caplog) -> None:
    sf.write(tmp_path / "a.wav", wave(0.5), 16000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.wav", wave(0.5, 1), 16000)
    lines = [{"audio_filepath": "a.wav", "text": "first"}, {"audio_filepath": "sub/b.wav", "text": "other"},
             {"audio_filepath": "sub/../a.wav", "text": "again"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with caplog.at_level(logging.WARNING):
        summary = convert_manifest(manifest, tmp_path / "out", num_workers=0)
    assert (summary.written, summary.skipped) == (2, 1)
    assert summary.skipped_items[0].startswith(f"{manifest}:3: duplicate of {manifest}:1")
    assert f"{manifest}:3" in caplog.text


def hostile_records(folder: Path) -> str:
    """A hand-built shard: good samples, transcripts too long (alone or for their audio), records with
    impossible fields, a record that is not UTF-8, and a key repeated from another shard."""
    samples = {
        "good1": sample("good1", 1.0, 1),
        "good2": sample("good2", 0.8, 2),
        "huge": sample("huge", 2.0, 3, text=HUGE),
        "dense": sample("dense", 0.5, 4, text="x" * 300),  # 300 characters in half a second
        "duration1e308": sample("duration1e308", 1.0, 5, duration=1e308),
        "duration_nan": sample("duration_nan", 1.0, 6, duration=float("nan")),
        "speaker_list": sample("speaker_list", 1.0, 7, speaker=["a", "b"]),
        "keywords_str": sample("keywords_str", 1.0, 8, context={"history": "", "keywords": "anna"}),
        "latin1": {**sample("latin1", 1.0, 9), "json": LATIN1},
    }
    write_shard(folder / "other.tar", {"good1": sample("good1", 0.9, 10)})
    return write_shard(folder / "hostile.tar", samples)


LATIN1 = json.dumps(synthetic_record("latin1", 1.0)).encode().replace(b"utterance", b"caf\xe9")
BAD_RECORDS = {"duration1e308", "duration_nan", "speaker_list", "keywords_str", "latin1"}


def test_training_reader_skips_and_counts_huge_transcripts_and_bad_records(tmp_path: Path) -> None:
    shard = hostile_records(tmp_path)
    module = ShardDataModule(train_shards=shard, max_batch_seconds=10, max_duration=5, num_workers=0,
                             bucket_buffer=0, max_batch_size=2, batches_per_epoch=4, max_text_tokens=1024,
                             max_text_tokens_per_second=60)
    batches = list(module.train_dataloader())  # the stream cycles over the shard: 8 samples, twice
    assert {k for b in batches for k in b["keys"]} == {"good1", "good2"}
    named = {(s["key"], s["reason"]) for b in batches for s in b["skipped"]}
    assert named == {("huge", "too_many_tokens"), ("dense", "too_many_tokens"),
                     *((key, "bad_record") for key in BAD_RECORDS)}
    assert sum(b["stats"]["skipped_too_many_tokens"] for b in batches) == 2 * sum(
        b["stats"]["skipped_bad_record"] for b in batches) / 5


def test_training_with_a_huge_transcript_runs_and_counts_it(tmp_path: Path) -> None:
    corpus = clean_corpus(tmp_path / "corpus")
    shard = hostile_records(tmp_path / "hostile")
    metrics = train_tiny(corpus, tmp_path / "run", f"data.train_shards=[{shard}]")
    assert np.isfinite(metrics["train/loss"])
    assert metrics["train/data_skipped_too_many_tokens"] >= 2
    assert metrics["train/data_skipped_bad_record"] >= 5


def test_eval_names_bad_records_and_repeated_keys_beside_the_wer(tmp_path: Path) -> None:
    corpus = clean_corpus(tmp_path / "corpus")
    shard = hostile_records(tmp_path / "hostile")
    train_tiny(corpus, tmp_path / "run")
    shards = [str(tmp_path / "hostile" / "other.tar"), shard]
    metrics, results = evaluate_shards(tmp_path / "run", shards, tmp_path / "eval")
    assert set(hyps(tmp_path / "eval")) == {"good1", "good2"}
    assert (metrics["num_utts"], metrics["num_skipped"], metrics["num_skipped/bad_record"]) == (2, 8, 5)
    assert (metrics["num_skipped/duplicate"], metrics["num_skipped/too_many_tokens"]) == (1, 2)
    named = {(s["key"], s["reason"]) for s in results["skipped"]}
    assert named == {("good1", "duplicate"), ("huge", "too_many_tokens"), ("dense", "too_many_tokens"),
                     *((key, "bad_record") for key in BAD_RECORDS)}
    detail = {s["key"]: s["detail"] for s in results["skipped"]}
    assert f"{shard}:duration1e308" in detail["duration1e308"] and "1e+308" in detail["duration1e308"]


def test_text_readers_skip_bad_records_and_huge_transcripts(tmp_path: Path, caplog) -> None:
    shard = hostile_records(tmp_path)
    with caplog.at_level(logging.WARNING):
        keys = [r["__key__"] for r in iter_records(shard)]
    assert set(keys) == {"good1", "good2", "huge", "dense", "duration1e308", "duration_nan"}  # audio not read
    assert f"{shard}:latin1" in caplog.text and f"{shard}:speaker_list" in caplog.text
    text = TextDataModule(train_shards=shard, max_text_tokens=1024)
    text.setup()
    assert "huge" not in {r["__key__"] for r in text.train_dataloader().dataset}
    assert len(text.train_dataloader().dataset) == 5
