"""Checkpoint writes that a kill cannot leave half-done: write beside the target, then rename.

Lightning's ``TorchCheckpointIO`` stages the file in the system temp folder and moves it into place;
across file systems (``/tmp`` -> a cluster's shared disk) that move is a copy, which a kill can cut
short, leaving a truncated ``last.ckpt``. Here the temporary file lives in the target's folder (same
file system), is flushed to disk, and replaces the target with one ``os.replace``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target`` (a DeepSpeed checkpoint folder), dropping the previous one.

    Folders cannot be swapped in one rename: the previous folder is first renamed ``<target>.old``
    (kept until the new one is in place), so at every instant a complete checkpoint exists under one
    of the two names; ``find_checkpoint`` falls back to ``.old``.
    """
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def find_checkpoint(path: str | Path) -> Path | None:
    """``path`` if it exists, else the ``<path>.old`` left by a run killed inside ``replace_folder``."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".old")):
        if candidate.exists():
            return candidate
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (remote URLs use Lightning's own path)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
