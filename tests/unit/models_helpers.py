"""Tiny builders shared by the tests of seed_asr.models (plain functions, no pytest fixtures)."""

from __future__ import annotations

from functools import partial

import torch

from seed_asr.models.converter import Converter
from seed_asr.models.encoder import ConformerEncoder
from seed_asr.models.llm import build_qwen2
from seed_asr.models.speech_llm import SpeechLLM
from seed_asr.text.prompts import PromptBuilder
from seed_asr.text.tokenizer import train_tokenizer

CORPUS = [
    "call anneliese okonkwo",
    "set a timer for ten minutes",
    "what is the weather in berlin",
    "play some music please",
    "今天天气很好",
    "我们明天去北京",
    "turn off the lights in the kitchen",
]


def tiny_tokenizer(kind: str = "char", vocab_size: int = 400):
    return train_tokenizer(CORPUS * 3, vocab_size=vocab_size, kind=kind)


def tiny_encoder(**kwargs) -> ConformerEncoder:
    opts = dict(d_model=32, num_layers=2, num_heads=4, ff_mult=2, conv_kernel=5, dropout=0.0)
    return ConformerEncoder(**(opts | kwargs))


def tiny_speech_llm(tokenizer=None, **kwargs) -> SpeechLLM:
    opts = dict(
        encoder=tiny_encoder(),
        converter=partial(Converter, splice=2, hidden_dim=64),
        tokenizer=tokenizer or tiny_tokenizer(),
        llm=partial(
            build_qwen2, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64
        ),
        prompt=partial(PromptBuilder, max_context_tokens=32),
    )
    return SpeechLLM(**(opts | kwargs))


def make_batch(texts: list[str], frames: list[int], contexts: list[dict | None] | None = None, seed: int = 0):
    """A right-padded batch as the DataModule yields it (random fbank, pad values are junk)."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(frames), max(frames), 80, generator=gen)
    contexts = contexts or [None] * len(texts)
    return {
        "feats": feats,
        "feat_lens": torch.tensor(frames),
        "texts": texts,
        "metas": [{"context": c} for c in contexts],
    }


def take(batch: dict, i: int) -> dict:
    """Sample i of a batch, unpadded, as a batch of one."""
    n = int(batch["feat_lens"][i])
    return {
        "feats": batch["feats"][i : i + 1, :n],
        "feat_lens": batch["feat_lens"][i : i + 1],
        "texts": batch["texts"][i : i + 1],
        "metas": batch["metas"][i : i + 1],
    }
