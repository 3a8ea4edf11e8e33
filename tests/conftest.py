"""Shared test fixtures: hermetic environment (offline hubs, offline wandb, caches in the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _hermetic_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(ROOT / ".cache" / "triton"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in corpus (real espeak-ng speech, both languages) with its ``cmvn.json``."""
    from seed_asr.data.cmvn import write_split_cmvn
    from seed_asr.data.corpus.build import build_corpus

    folder = tmp_path_factory.mktemp("corpus")
    build_corpus(folder, 120, seed=0, num_workers=2, overwrite=True)
    write_split_cmvn(folder, utterances=64)
    return folder
