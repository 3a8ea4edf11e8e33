"""Where a stage's tokenizer comes from, and how it and the CMVN statistics travel inside checkpoints.

Order: the tokenizer stored in the first ``init_from`` checkpoint that has one; else a local
pretrained tokenizer folder (``cfg.model.tokenizer.path``); else one trained on the transcripts of
the training shards (``cfg.model.tokenizer.kind`` / ``vocab_size``). Checkpoints carry the tokenizer
files as strings (``checkpoint["tokenizer_files"]``) so that every checkpoint is self-contained.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from seed_asr.data.features import GlobalCMVN
from seed_asr.data.records import iter_records
from seed_asr.data.text import load_tokenizer, train_tokenizer
from seed_asr.utils.checkpoints import TOKENIZER_KEY, load_state_from_checkpoint
from seed_asr.utils.params import init_sources


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


def resolve_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """Pick or build the stage's tokenizer (see module docstring)."""
    for source in init_sources(cfg.stage):
        files = load_state_from_checkpoint(source["path"], source["checkpoint"]).get(TOKENIZER_KEY)
        if files:
            return tokenizer_from_files(files)
    tok_cfg = cfg.model.tokenizer
    if tok_cfg.get("path"):
        return load_tokenizer(tok_cfg.path)
    texts = [r["text"] for r in iter_records(cfg.data.train_shards)]
    if not texts:
        raise ValueError(f"no transcripts in {cfg.data.train_shards} to train the tokenizer on")
    return train_tokenizer(texts, vocab_size=tok_cfg.vocab_size, kind=tok_cfg.kind)
