"""Experiment tracking of a training run: the wandb (offline) run is named and grouped by stage,
experiment and SLURM job id, carries the run info and a transcript table with audio, and no logged file
of the run holds the wandb API key from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

SECRET = "seedasr-test-secret-0123456789abcdef"  # a fake key: what a user exports, never to be logged


def test_wandb_run_named_grouped_with_audio_and_no_key(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    home = tmp_path / "home"  # wandb's default staging and cache folders live in the home folder
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "WANDB_API_KEY": SECRET,
        "SLURM_JOB_ID": "4242",
        "WANDB_MODE": "offline",
    }
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_DIR"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "seed_asr.train",
        "stage=sft",
        "debug=tiny",
        "logger=many",
        f"paths.corpus_dir={tiny_corpus}",
        f"hydra.run.dir={run_dir}",
        "data.max_batch_seconds=30",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    records = b"".join(p.read_bytes() for p in offline[0].glob("*.wandb"))
    for expected in (b"sft-default-4242", b"slurm-4242", b"git_commit", b"world_size"):
        assert expected in records, expected
    # the group is the experiment, the job type the stage
    assert b"default" in records and b"sft" in records

    media = offline[0] / "files" / "media"
    tables = list(media.glob("table/val/samples*.table.json"))
    assert tables, sorted(p.relative_to(offline[0]).as_posix() for p in offline[0].rglob("*"))
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["key", "lang", "domain", "reference", "hypothesis", "audio"]
    assert all(row[0] for row in table["data"])  # utterance keys
    assert 0 < sum(row[-1] is not None for row in table["data"]) <= 4  # audio players
    # the table's audio clips are staged as WAV files inside the run folder, nothing in the home folder
    staged = [p.read_bytes()[:4] for p in (run_dir / "wandb").rglob("*") if p.is_file()]
    assert staged.count(b"RIFF") >= 1
    assert [p for p in home.rglob("*") if "wandb" in p.name] == []

    leaked = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert SECRET not in proc.stdout + proc.stderr
