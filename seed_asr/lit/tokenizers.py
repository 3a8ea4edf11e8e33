"""Where a stage's tokenizer comes from.

Order: the tokenizer stored in the first ``init_from`` checkpoint that has one; else a local
pretrained tokenizer folder (the model config's ``tokenizer.path``); else one trained on the transcripts
of the training shards (``tokenizer.kind`` / ``vocab_size``).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from seed_asr.artifacts.serialization import tokenizer_from_files
from seed_asr.data.records import iter_records
from seed_asr.text.tokenizer import load_tokenizer, train_tokenizer
from seed_asr.utils.checkpoints import TOKENIZER_KEY, load_state_from_checkpoint
from seed_asr.utils.params import init_sources


def resolve_tokenizer(
    stage: DictConfig, tokenizer: DictConfig, train_shards: str | Sequence[str]
) -> PreTrainedTokenizerBase:
    """Pick or build the stage's tokenizer (see module docstring) from the stage's options (its
    ``init_from``), the model's ``tokenizer`` node and the training shards."""
    for source in init_sources(stage):
        files = load_state_from_checkpoint(source["path"], source["checkpoint"]).get(TOKENIZER_KEY)
        if files:
            return tokenizer_from_files(files)
    if tokenizer.get("path"):
        return load_tokenizer(tokenizer.path)
    texts = [r["text"] for r in iter_records(train_shards)]
    if not texts:
        raise ValueError(f"no transcripts in {train_shards} to train the tokenizer on")
    return train_tokenizer(texts, vocab_size=tokenizer.vocab_size, kind=tokenizer.kind)
