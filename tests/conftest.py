"""Shared test set-up: a hermetic environment and a small built-in corpus."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from seed_asr.testing.threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]

# Hermetic tests, set before any test module imports a library that reads these once: offline hubs
# and wandb, compiled DeepSpeed ops and Triton caches inside the checkout, and (no GPU) Triton
# kernels in the CPU interpreter (@triton.jit reads TRITON_INTERPRET when a kernel module loads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("TRITON_CACHE_DIR", str(ROOT / ".cache" / "triton"))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The test runs on one torch thread (restored after)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in corpus (real espeak-ng speech, both languages) with its ``cmvn.json``."""
    from seed_asr.corpus.build import build_corpus
    from seed_asr.data.cmvn import write_split_cmvn

    folder = tmp_path_factory.mktemp("corpus")
    build_corpus(folder, 120, seed=0, num_workers=2, overwrite=True)
    write_split_cmvn(folder, utterances=64)
    return folder
