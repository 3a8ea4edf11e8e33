"""Tokenizer of the built-in LLM: trained on corpus text with Hugging Face `tokenizers`.

Two kinds, both covering any Unicode text (English, Chinese, ...) without an unknown token:
- "bpe": byte-level BPE (GPT-2 style), merges learned up to `vocab_size`;
- "char": one token per character for the `vocab_size` most frequent characters of the corpus,
  every other character falls back to its UTF-8 bytes (<0xNN> tokens); spaces become "▁".
The result is a `transformers.PreTrainedTokenizerFast`, saved and loaded with
`save_pretrained` / `load_tokenizer`, like the tokenizer of any pretrained LLM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from seed_asr.text.prompts import PROMPT_MARKERS

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
SPACE = "▁"


def _byte_level_bpe(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _chars_with_byte_fallback(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    # A BPE model without merges is a character model; byte_fallback maps unseen characters to bytes.
    vocab = {token: i for i, token in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    counts = Counter(ch for text in texts for ch in text.replace(" ", SPACE))
    for ch, _ in counts.most_common(max(0, vocab_size - len(vocab))):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(" ", SPACE)])
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1000,
    kind: Literal["bpe", "char"] = "bpe",
    markers: Sequence[str] = PROMPT_MARKERS,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on corpus text.

    Args:
        texts: training sentences (iterated once).
        vocab_size: total vocabulary including special tokens (and the 256 byte tokens of "char").
        kind: "bpe" (byte-level BPE) or "char" (characters with byte fallback).
        markers: prompt marker tokens, added as special tokens (never split).

    Returns:
        A tokenizer with pad `<|pad|>` and bos = eos = `<|endoftext|>`.
    """
    specials = [PAD_TOKEN, EOS_TOKEN, *markers]
    if vocab_size <= len(specials) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} must exceed the {len(specials) + 256} special and byte tokens"
        )
    build = {"bpe": _byte_level_bpe, "char": _chars_with_byte_fallback}.get(kind)
    if build is None:
        raise ValueError(f"tokenizer kind must be 'bpe' or 'char', got {kind!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=build(texts, vocab_size, specials),
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        additional_special_tokens=list(markers),
    )


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with `save_pretrained` (ours or a pretrained LLM's) from a local folder.

    A tokenizer without a pad token gets its eos token as pad (padding is always masked).
    """
    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer path {path!r} is not a local folder")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {path!r} has no eos token; transcripts need one to end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
