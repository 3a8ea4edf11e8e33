"""Non-finite and out-of-range audio: one rule for every reader (shard conversion, the training and
evaluation readers, and ``decode_audio``, which ``seed-asr transcribe`` reads files with): NaN/Inf audio
is refused and named, audio above full scale is scaled (not clipped) and counted, channels that cancel
in the down-mix give one channel; a conversion that fails or is refused never loses the old shards."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

import seed_asr.data.shards
from seed_asr.data.audio import AudioError, decode_audio
from seed_asr.data.datamodule import ShardDataModule
from seed_asr.data.pipeline import Skipped, Utterance, decode_sample
from seed_asr.data.shards import convert_manifest
from seed_asr.testing.synthetic import synthetic_record
from tests.reliability.hostile import (
    clean_corpus,
    encoded,
    evaluate_shards,
    hyps,
    train_tiny,
    wave,
    write_shard,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SECONDS = 1.0


def hostile_audio() -> dict[str, tuple[np.ndarray, int]]:
    """name -> ((S,) or (S, 2) float32 samples, rate), written as float WAV."""
    voice = wave(SECONDS, 1)
    nan, inf = wave(SECONDS, 2), wave(SECONDS, 3)
    nan[100:110], inf[5] = np.nan, np.inf
    return {
        "good": (wave(SECONDS, 0), 16000),
        "good22k": (wave(SECONDS, 4, 22050), 22050),
        "nan": (nan, 16000),
        "inf": (inf, 16000),
        "loud": (voice * (3.0 / np.abs(voice).max()), 16000),  # peaks at 3.0
        "antiphase": (np.stack([voice, -voice], axis=1), 16000),
    }


def float_wav(samples: np.ndarray, sr: int) -> bytes:
    return encoded(samples, sr, fmt="WAV", subtype="FLOAT")


def test_decode_audio_refuses_non_finite_audio_and_repairs_the_rest() -> None:
    audio = hostile_audio()
    for name in ("nan", "inf"):
        with pytest.raises(AudioError, match=f"{name}.wav holds [0-9]+ NaN/Inf samples") as caught:
            decode_audio(float_wav(*audio[name]), name=f"{name}.wav")
        assert caught.value.reason == "non_finite"
    voice = audio["antiphase"][0][:, 0]
    loud = decode_audio(float_wav(*audio["loud"]))
    assert np.abs(loud).max() == pytest.approx(1.0) and np.mean(np.abs(loud) >= 0.999) < 0.01
    np.testing.assert_allclose(loud, audio["loud"][0] / 3.0, atol=1e-6)  # scaled, not clipped
    np.testing.assert_allclose(decode_audio(float_wav(*audio["antiphase"])), voice, atol=1e-6)
    quiet = 0.5 * np.stack([voice, voice * 0.01], axis=1)  # one channel near silent: the mean is kept
    np.testing.assert_allclose(decode_audio(float_wav(quiet, 16000)), quiet.mean(axis=1), atol=1e-6)


def read_split(folder: Path) -> dict[str, np.ndarray]:
    """text -> (S,) samples of a split's shards."""
    urls = sorted(str(p) for p in folder.glob("shard-*.tar"))
    samples = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    return {json.loads(s["json"])["text"]: sf.read(io.BytesIO(s["flac"]), dtype="float32")[0]
            for s in samples}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    for name, (samples, sr) in hostile_audio().items():
        sf.write(tmp_path / f"{name}.wav", samples, sr, subtype="FLOAT")
    lines = [{"audio_filepath": f"{name}.wav", "text": name} for name in hostile_audio()]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_conversion_skips_and_names_non_finite_audio_and_counts_repairs(
    manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        summary = convert_manifest(manifest, tmp_path / "out", num_workers=0)
    assert (summary.written, summary.skipped, summary.adjusted) == (4, 2, 2)
    assert sorted(item.split(":")[0] for item in summary.skipped_items) == sorted(
        str(manifest.parent / f"{n}.wav") for n in ("inf", "nan")
    )
    assert all("NaN/Inf" in item for item in summary.skipped_items)
    assert {Path(item.split(":")[0]).stem for item in summary.adjusted_items} == {"loud", "antiphase"}
    assert "nan.wav" in caplog.text and "loud.wav" in caplog.text
    written = read_split(tmp_path / "out" / "train")
    assert set(written) == {"good", "good22k", "loud", "antiphase"}
    # the shard holds what decode_audio (transcribe's reader) gives, up to 16-bit rounding
    for name in written:
        np.testing.assert_allclose(written[name], decode_audio(manifest.parent / f"{name}.wav"), atol=1e-4)
    assert np.mean(np.abs(written["loud"]) >= 0.999) < 0.01
    assert np.sqrt(np.mean(written["antiphase"] ** 2)) > 0.5 * np.sqrt(np.mean(wave(SECONDS, 1) ** 2))


def test_old_shards_survive_a_failed_or_refused_conversion(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    convert_manifest(manifest, out, shard_size=1, num_workers=0)
    old = {p.name: p.read_bytes() for p in (out / "train").glob("shard-*.tar")}
    assert len(old) == 4
    calls = []
    real = seed_asr.data.shards.transcode_to_flac

    def crashing(path: Path):
        calls.append(path)
        if len(calls) == 3:
            raise MemoryError("killed mid-conversion")
        return real(path)

    monkeypatch.setattr(seed_asr.data.shards, "transcode_to_flac", crashing)
    with pytest.raises(MemoryError):
        convert_manifest(manifest, out, shard_size=1, num_workers=0, overwrite=True)
    assert {p.name: p.read_bytes() for p in (out / "train").glob("shard-*.tar")} == old
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(old)  # nothing partial is left
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_manifest(manifest, out, num_workers=0)
    monkeypatch.undo()
    manifest.write_text(json.dumps({"audio_filepath": "good.wav", "text": "only"}) + "\n")
    convert_manifest(manifest, out, shard_size=1, num_workers=0, overwrite=True)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["shard-000000.tar"]
    assert set(read_split(out / "train")) == {"only"}


def hand_built_shard(path: Path) -> str:
    """Float WAV samples straight into a shard (what the converter would refuse or repair)."""
    members = {name: {"wav": float_wav(*audio), "json": synthetic_record(name, SECONDS)}
               for name, audio in hostile_audio().items()}
    return write_shard(path, members)


def test_readers_of_shards_apply_the_same_rule(tmp_path: Path) -> None:
    shard = hand_built_shard(tmp_path / "hand.tar")
    raw = {s["__key__"]: s for s in wds.WebDataset([shard], shardshuffle=False, empty_check=False)}
    items = {key: decode_sample(sample) for key, sample in raw.items()}
    assert {key for key, item in items.items() if isinstance(item, Skipped)} == {"nan", "inf"}
    assert {item.reason for item in items.values() if isinstance(item, Skipped)} == {"non_finite"}
    for key, item in items.items():
        if isinstance(item, Utterance):
            np.testing.assert_array_equal(item.audio, decode_audio(raw[key]["wav"]))
    val = list(ShardDataModule(val_shards=shard, max_duration=10, max_batch_seconds=10, num_workers=0)
               .val_dataloader())
    assert sorted(k for b in val for k in b["keys"]) == ["antiphase", "good", "good22k", "loud"]
    assert sorted((s["key"], s["reason"]) for b in val for s in b["skipped"]) == [
        ("inf", "non_finite"), ("nan", "non_finite")
    ]


def test_training_and_eval_skip_and_count_non_finite_audio(tmp_path: Path) -> None:
    corpus = clean_corpus(tmp_path / "corpus")
    shard = hand_built_shard(tmp_path / "hand" / "shard-000000.tar")
    train = f"data.train_shards=[{corpus}/train/shard-000000.tar,{shard}]"
    metrics = train_tiny(corpus, tmp_path / "run", train, "data.train_weights=[1,1]")
    assert np.isfinite(metrics["train/loss"]) and metrics["train/data_skipped_non_finite"] >= 1
    metrics, results = evaluate_shards(tmp_path / "run", [shard], tmp_path / "eval")
    assert set(hyps(tmp_path / "eval")) == {"good", "good22k", "loud", "antiphase"}
    assert (metrics["num_utts"], metrics["num_skipped"], metrics["num_skipped/non_finite"]) == (4, 2, 2)
    assert sorted(s["key"] for s in results["skipped"]) == ["inf", "nan"]
