"""``seed-asr transcribe`` on a mix of good, very short, unreadable and missing files: no crash, every
readable file's transcript on stdout (streamed batch by batch, nothing else there), every other file named
on stderr and counted, and an exit status that says whether any failed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_export_roundtrip import ROOT, TEXTS, tiny_sft_run

import seed_asr.transcribe as transcribe
from seed_asr.decoding.recognize import DecodingConfig
from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import synthetic_wave

pytestmark = pytest.mark.usefixtures("one_thread")

# seconds of each readable clip: 1 ms and 50 ms are shorter than the encoder's 7 frames (85 ms)
READABLE = {"long.wav": 1.0, "tiny.wav": 0.001, "short.flac": 0.05, "mid.wav": 0.4}
BAD = ("garbage.wav", "missing.wav")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sft_run(tmp_path_factory.mktemp("transcribe"), TEXTS * 2)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Path of every clip by name; ``garbage.wav`` holds no audio, ``missing.wav`` does not exist."""
    rng = np.random.default_rng(0)
    paths = {name: str(tmp_path / name) for name in (*READABLE, *BAD)}
    for name, seconds in READABLE.items():
        sf.write(paths[name], synthetic_wave(rng, seconds), 16_000)
    Path(paths["garbage.wav"]).write_bytes(b"RIFF, but not audio")
    return paths


def lines(text: str) -> list[tuple[str, str]]:
    """``(path, transcript)`` of each ``<path>\\t<transcript>`` line; fails on any other line."""
    assert all(re.fullmatch(r"[^\t]+\t[^\t]*", line) for line in text.splitlines()), text
    return [tuple(line.split("\t")) for line in text.splitlines()]


def test_every_readable_file_gets_its_transcript_and_every_bad_one_is_named(
    run: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    order = ["long.wav", "garbage.wav", "tiny.wav", "short.flac", "missing.wav", "mid.wav"]
    status = transcribe.main(["--ckpt", str(run), *(files[name] for name in order)])
    out, err = capsys.readouterr()
    assert status == 1
    assert [path for path, _ in lines(out)] == [files[name] for name in order if name in READABLE]
    for name in BAD:
        assert f"skipping {files[name]}: AudioError" in err
    assert "2 of 6 files failed" in err


def test_clips_too_short_for_the_encoder_are_padded_and_succeed(
    run: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert transcribe.main(["--ckpt", str(run), files["tiny.wav"], files["short.flac"]]) == 0
    out, err = capsys.readouterr()
    assert [path for path, _ in lines(out)] == [files["tiny.wav"], files["short.flac"]]
    assert "skipping" not in err


def test_transcripts_come_batch_by_batch(run: Path, files: dict[str, str], monkeypatch) -> None:
    read = []
    real_read = transcribe.read_audio
    monkeypatch.setattr(transcribe, "read_audio", lambda path: read.append(path) or real_read(path))
    paths = [files[name] for name in READABLE]
    results = transcribe.transcribe_files(str(run), paths, DecodingConfig(), device="cpu", batch_size=2)
    first = next(results)
    assert (first.path, read) == (paths[0], paths[:2]), "the first batch is out before the next is read"
    rest = list(results)
    assert [r.path for r in rest] == paths[1:] and all(r.error is None for r in [first, *rest])


def test_a_failing_batch_is_decoded_again_file_by_file(run: Path, files: dict[str, str], monkeypatch) -> None:
    """A file that breaks decoding (here: features that are not finite) takes only itself down."""
    real_read, real_transcripts = transcribe.read_audio, transcribe.transcripts

    def poisoned_read(path: str) -> torch.Tensor:
        wave = real_read(path)
        return torch.full_like(wave, float("nan")) if path == files["mid.wav"] else wave

    def strict_transcripts(model, batch, cfg) -> list[str]:
        if not torch.isfinite(batch["feats"]).all():
            raise RuntimeError("features are not finite")
        return real_transcripts(model, batch, cfg)

    monkeypatch.setattr(transcribe, "read_audio", poisoned_read)
    monkeypatch.setattr(transcribe, "transcripts", strict_transcripts)
    paths = [files[name] for name in READABLE]
    results = list(transcribe.transcribe_files(str(run), paths, DecodingConfig(), device="cpu"))
    assert [r.path for r in results] == paths
    failed = {r.path: r.error for r in results if r.error is not None}
    assert failed == {files["mid.wav"]: "RuntimeError: features are not finite"}


def test_stdout_carries_only_transcripts_in_a_fresh_process(run: Path, files: dict[str, str]) -> None:
    """The console script in a new process, where DeepSpeed (imported while the model loads) logs to
    stdout on CPUs: stdout stays pipeable and the exit status says that a file failed."""
    paths = [files["long.wav"], files["garbage.wav"], files["tiny.wav"]]
    cmd = [sys.executable, "-m", "seed_asr.cli", "transcribe", "--ckpt", str(run), *paths]
    proc = run_process(cmd, timeout=300, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert [path for path, _ in lines(proc.stdout)] == [paths[0], paths[2]]
    assert f"skipping {paths[1]}" in proc.stderr and "1 of 3 files failed" in proc.stderr
