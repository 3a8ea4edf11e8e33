"""wandb's home-directory folders are pointed into the run folder, for every run of a process, and a
folder the user chose is left alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seed_asr.utils import run_info


def test_wandb_folders_follow_each_run_unless_user_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in run_info.WANDB_DIRS:  # set, then removed: monkeypatch restores the environment after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(run_info, "_wandb_dirs_set", {})
    monkeypatch.setenv("WANDB_CACHE_DIR", "/scratch/me/wandb")
    run_info.keep_wandb_files_in(tmp_path / "run1")
    run_info.keep_wandb_files_in(tmp_path / "run2")  # a second training in the same process
    assert os.environ["WANDB_DATA_DIR"] == str(tmp_path / "run2" / "wandb" / "data")
    assert os.environ["WANDB_ARTIFACT_DIR"] == str(tmp_path / "run2" / "wandb" / "artifacts")
    assert os.environ["WANDB_CACHE_DIR"] == "/scratch/me/wandb"
