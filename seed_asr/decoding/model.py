"""What decoding needs of a model: the interface `seed_asr.models.speech_llm.SpeechLLM` implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class PromptCodec(Protocol):
    """Turns generated token ids back into a transcript."""

    def decode(self, ids: Sequence[int]) -> str: ...


class SpeechLM(Protocol):
    """An audio-conditioned causal LM as the searches drive it.

    Attributes:
        tokenizer: the LLM's tokenizer (eos, pad and vocabulary size).
        prompt: decodes generated ids into text.
        training: whether the module is in training mode (searches switch to eval and back).
    """

    tokenizer: PreTrainedTokenizerBase
    prompt: PromptCodec
    training: bool

    @property
    def base_llm(self) -> PreTrainedModel:
        """The causal LM whose ``forward`` takes ``inputs_embeds`` and a KV cache."""
        ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def encode_audio(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(B, T, 80) fbank and (B,) lengths -> (B, N, H) audio embeddings, (B,) lengths, encoder output."""
        ...

    def max_new_tokens(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """(B,) caps on generated tokens from the (B,) audio embedding lengths."""
        ...

    def prefix(
        self, batch: Mapping, use_context: bool = False, contexts: Sequence[Mapping | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded prompt: (B, P, H) embeddings, (B, P) attention mask, (B,) new-token caps."""
        ...

    def decoding_prefix(
        self, audio_embeds: torch.Tensor, audio_lens: torch.Tensor, contexts: Sequence[Mapping | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P, H) embeddings and (B, P) attention mask of prompts around given audio embeddings."""
        ...

    @staticmethod
    def prompt_contexts(
        batch: Mapping, use_context: bool, contexts: Sequence[Mapping | None] | None = None
    ) -> list[Mapping | None]:
        """The B prompt contexts of a batch (own, explicit or none)."""
        ...
