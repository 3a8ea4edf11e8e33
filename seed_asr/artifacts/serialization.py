"""How the tokenizer and the CMVN statistics travel inside checkpoints: as plain strings and lists, so
that every checkpoint is self-contained and loads with ``weights_only=True``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from seed_asr.data.features import GlobalCMVN
from seed_asr.text.tokenizer import load_tokenizer


def cmvn_to_dict(cmvn: GlobalCMVN) -> dict[str, list[float]]:
    """The normalisation statistics as plain lists (loadable with weights_only=True)."""
    return {"mean": cmvn.mean.tolist(), "std": (1.0 / cmvn.inv_std).tolist()}


def cmvn_from_dict(stats: dict[str, list[float]]) -> GlobalCMVN:
    """Inverse of ``cmvn_to_dict``."""
    return GlobalCMVN(torch.tensor(stats["mean"]), torch.tensor(stats["std"]))


def tokenizer_to_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer's ``save_pretrained`` files as {name: text}."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


def tokenizer_from_files(files: dict[str, str]) -> PreTrainedTokenizerBase:
    """Rebuild a tokenizer from ``tokenizer_to_files`` output."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / Path(name).name).write_text(text, encoding="utf-8")
        return load_tokenizer(tmp)
