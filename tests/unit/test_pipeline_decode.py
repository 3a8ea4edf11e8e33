"""Sample decoding (bad and unusual audio), duration limits, augmentation, collation, shard patterns."""

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from seed_asr.data.audio import encode_flac, resample
from seed_asr.data.pipeline import (
    Augmenter,
    Collator,
    SampleLimits,
    Skipped,
    Utterance,
    decode_sample,
    expand_shards,
)


def encoded(wave: np.ndarray, sr: int, fmt: str = "FLAC") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def raw(key: str, audio: bytes, ext: str = "flac", text: str = "hello") -> dict:
    return {"__key__": key, ext: audio, "json": json.dumps({"text": text}).encode()}


def test_bad_samples_become_counted_markers(caplog):
    assert decode_sample(raw("corrupt", b"not audio at all")) == Skipped("corrupt", "undecodable")
    assert decode_sample(raw("nobytes", b"")) == Skipped("nobytes", "empty")
    assert decode_sample(raw("noframes", encoded(np.zeros((0,)), 16000, "WAV"), "wav")) == Skipped(
        "noframes", "empty"
    )
    assert decode_sample({"__key__": "nojson", "flac": encode_flac(np.zeros(800))}).reason == "undecodable"
    assert decode_sample({**raw("badjson", encode_flac(np.zeros(800))), "json": b"{"}).reason == "bad_record"
    assert "corrupt" in caplog.text and "nobytes" in caplog.text


def test_stereo_is_downmixed_and_rates_are_resampled():
    t = np.arange(8000) / 8000
    left, right = np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 300 * t)
    stereo = decode_sample(raw("st", encoded(np.stack([left, right], 1) * 0.5, 8000)))
    assert isinstance(stereo, Utterance) and stereo.audio.shape == (16000,)
    np.testing.assert_allclose(stereo.audio.std(), 0.75 * 0.5 / np.sqrt(2), rtol=0.02)
    hi_fi = decode_sample(raw("cd", encoded(0.1 * np.ones(44100), 44100)))
    assert hi_fi.audio.shape == (16000,) and hi_fi.meta == {"text": "hello"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("sr_in", "sr_out"), [(22050, 16000), (8000, 16000), (17778, 16000), (44100, 16000)])
def test_resample_matches_scipy_default_filter(sr_in, sr_out, dtype):
    wave = np.random.default_rng(0).standard_normal(3 * sr_in).astype(dtype)
    ours = resample(wave, sr_in, sr_out)
    up, down = sr_out // np.gcd(sr_in, sr_out), sr_in // np.gcd(sr_in, sr_out)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, resample_poly(wave, up, down).astype(np.float32))
    np.testing.assert_array_equal(resample(wave, sr_in, sr_out), ours)  # the cached filter is unchanged


def test_duration_limits_name_the_reason():
    limits = SampleLimits(0.5, 2.0)
    short = Utterance("s", np.zeros(4000, np.float32), {"text": "a"})
    long = Utterance("l", np.zeros(48000, np.float32), {"text": "a"})
    ok = Utterance("o", np.zeros(16000, np.float32), {"text": "a"})
    assert [limits.check(u) for u in (short, long)] == [Skipped("s", "too_short"), Skipped("l", "too_long")]
    assert limits.check(ok) is ok
    with pytest.raises(ValueError, match="min_duration"):
        SampleLimits(3.0, 2.0)


def test_speed_perturbation_and_noise_snr():
    wave = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000).astype(np.float32)
    rng = np.random.default_rng(0)
    for factor in (0.9, 1.1):  # resample_poly gives ceil(S * up / down) samples, up / down = 10 / (10 f)
        expected = -(-16000 * 10 // round(10 * factor))
        assert Augmenter(speed_factors=[factor]).augment(wave, rng).shape[0] == expected
    noisy = Augmenter(noise_prob=1.0, noise_snr_db=(10.0, 10.0)).augment(wave, rng)
    snr = 10 * np.log10(np.mean(wave**2) / np.mean((noisy - wave) ** 2))
    assert abs(snr - 10.0) < 0.5


class CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def test_collator_builds_the_batch_contract():
    meta = {"text": "ab", "context": {"history": "hi", "keywords": ["x", "y"]}}
    utts = [Utterance("a", np.ones(3, np.float32), meta), Utterance("b", np.ones(5, np.float32), meta)]
    batch = Collator(CharTokenizer())(utts, None)
    assert batch["audio"].shape == (2, 5) and batch["audio"].dtype == torch.float32
    assert batch["audio_lens"].tolist() == [3, 5] and batch["audio"][0, 3:].eq(0).all()
    assert batch["keys"] == ["a", "b"] and batch["texts"] == ["ab", "ab"] and batch["metas"][0] is meta
    assert batch["stats"]["padding_fraction"] == pytest.approx(2 / 10)
    assert batch["text_ids"][0].tolist() == [97, 98]
    assert batch["context_ids"][0].tolist() == [ord(c) for c in "hi\nx, y"]
    marked = Collator().collate_items([utts[0], Skipped("z", "too_long"), Skipped("w", "too_long")])
    assert marked["keys"] == ["a"] and marked["stats"]["skipped_too_long"] == 2 and "text_ids" not in marked


def test_expand_shards_handles_paths_globs_and_braces(tmp_path):
    for i in range(3):
        (tmp_path / f"s-{i:02d}.tar").write_bytes(b"")
    every = [str(tmp_path / f"s-{i:02d}.tar") for i in range(3)]
    assert expand_shards(str(tmp_path / "*.tar")) == every
    assert expand_shards(str(tmp_path / "s-{00..01}.tar")) == every[:2]
    assert expand_shards([every[2], str(tmp_path / "s-0[01].tar")]) == every
    with pytest.raises(FileNotFoundError, match="s-05.tar"):
        expand_shards(str(tmp_path / "s-{05..07}.tar"))
