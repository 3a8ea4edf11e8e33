"""Tokenizer of the built-in LLM: trained on corpus text with Hugging Face `tokenizers`.

The built-in LLM is a Qwen2, and transformers (5.x) loads the tokenizer of a Qwen2 model folder as its
`Qwen2Tokenizer`, which puts the saved vocabulary and merges into its own pipeline, whatever pipeline
`tokenizer.json` describes. Both kinds therefore use exactly that pipeline (NFC, Qwen2's pre-tokenizer split,
byte-level BPE), so an exported LLM folder reads back through `AutoTokenizer` to the same token ids; both
cover any Unicode text (English, Chinese, ...) without an unknown token:
- "bpe": byte-level BPE, merges learned up to `vocab_size`;
- "char": one token per character for the most frequent characters of the corpus (merges that only join
  the UTF-8 bytes of one character), every other character as its bytes.
The result is a `transformers.PreTrainedTokenizerFast`, saved and loaded with
`save_pretrained` / `load_tokenizer`, like the tokenizer of any pretrained LLM.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from seed_asr.text.prompts import PROMPT_MARKERS

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"


def _qwen2_pipeline(model: models.BPE) -> Tokenizer:
    """``model`` inside the pipeline that transformers' ``Qwen2Tokenizer`` builds around a vocabulary."""
    tok = Tokenizer(model)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _byte_level_bpe(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    tok = _qwen2_pipeline(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _characters(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    # Merges written by hand (no trainer learns "whole characters only"): each joins a prefix of one
    # character's bytes to its next byte, which is a UTF-8 continuation byte, so no merge crosses characters.
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = []
    to_bytes = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    counts = Counter(ch for text in texts for ch in unicodedata.normalize("NFC", text))
    for ch, _ in counts.most_common():
        symbols = to_bytes.pre_tokenize_str(ch)[0][0]
        prefixes = [symbols[:k] for k in range(2, len(symbols) + 1) if symbols[:k] not in vocab]
        if len(vocab) + len(prefixes) > vocab_size:
            continue
        for prefix in prefixes:
            merges.append((prefix[:-1], prefix[-1]))
            vocab[prefix] = len(vocab)
    return _qwen2_pipeline(models.BPE(vocab=vocab, merges=merges))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1000,
    kind: Literal["bpe", "char"] = "bpe",
    markers: Sequence[str] = PROMPT_MARKERS,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on corpus text.

    Args:
        texts: training sentences (iterated once).
        vocab_size: total vocabulary including the special tokens and the 256 byte tokens ("char" spends
            up to n - 1 entries per character of n UTF-8 bytes).
        kind: "bpe" (byte-level BPE) or "char" (characters, the bytes of the rare ones).
        markers: prompt marker tokens, added as special tokens (never split).

    Returns:
        A tokenizer with pad `<|pad|>` and bos = eos = `<|endoftext|>`.
    """
    specials = [PAD_TOKEN, EOS_TOKEN, *markers]
    if vocab_size <= len(specials) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} must exceed the {len(specials) + 256} special and byte tokens"
        )
    build = {"bpe": _byte_level_bpe, "char": _characters}.get(kind)
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
