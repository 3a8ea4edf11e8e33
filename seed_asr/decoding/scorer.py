"""Next-token scorers: the one step that greedy and beam search repeat.

A scorer holds one row per running hypothesis (its KV cache, attention mask and position) and answers
"what are the next-token scores of every row". The searches only talk to this protocol, so a second
model (e.g. the context-free prefix of joint beam search) is a scorer that steps two `CausalLMScorer`s
in lockstep and combines their log-probabilities.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import torch
from torch import Tensor
from transformers import PreTrainedModel


class Scorer(Protocol):
    """Next-token scores of N rows (hypotheses); rows are reordered by the search between steps."""

    def start(self) -> Tensor:
        """Consume the prefixes and return next-token scores `(B, V)`, one row per prefix."""
        ...

    def step(self, tokens: Tensor) -> Tensor:
        """Append `tokens (N,)` (one per row) and return next-token scores `(N, V)`."""
        ...

    def select(self, rows: Tensor) -> None:
        """Keep rows `rows (N',)` in that order (reorders, duplicates or drops hypotheses)."""
        ...


def check_prefix(prefix_embeds: Tensor, prefix_mask: Tensor) -> None:
    """Raise a `ValueError` naming the problem when a prefix is not a left-padded `(B, P, H)` batch.

    Args:
        prefix_embeds: `(B, P, H)` input embeddings.
        prefix_mask: `(B, P)` 1 on valid positions; the valid positions of each row are a suffix.
    """
    if prefix_embeds.ndim != 3:
        raise ValueError(f"prefix_embeds must be (B, P, H), got shape {tuple(prefix_embeds.shape)}")
    if tuple(prefix_mask.shape) != tuple(prefix_embeds.shape[:2]):
        raise ValueError(
            f"prefix_mask must be (B, P) = {tuple(prefix_embeds.shape[:2])}, got {tuple(prefix_mask.shape)}"
        )
    mask = prefix_mask.bool()
    if not mask[:, -1].all():
        raise ValueError("prefix_mask: every row needs at least one valid position, left padded (last is 1)")
    if (mask[:, 1:].long() < mask[:, :-1].long()).any():
        raise ValueError("prefix_mask must be left padded (zeros before ones in every row)")


def check_max_new_tokens(max_new_tokens: int | Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Per-utterance caps on generated tokens as a `(B,)` int64 tensor (each at least 1)."""
    caps = torch.as_tensor(max_new_tokens, dtype=torch.long, device=device)
    if caps.ndim == 0:
        caps = caps.expand(batch_size)
    if tuple(caps.shape) != (batch_size,):
        raise ValueError(f"max_new_tokens must be int or ({batch_size},) tensor, got {tuple(caps.shape)}")
    if (caps < 1).any():
        raise ValueError(f"max_new_tokens must be >= 1, got {caps.tolist()}")
    return caps.clone()


class CausalLMScorer:
    """A Hugging Face causal LM continuing left-padded embedding prefixes, with a KV cache.

    Positions follow `generate`: `cumsum(mask) - 1` over the prefix, then one more per new token, so the
    scores equal those of `llm.generate(inputs_embeds=..., attention_mask=...)`.

    Args:
        llm: any Hugging Face causal LM that takes `inputs_embeds`, `attention_mask`, `position_ids`
            and a KV cache (`cache`, or `past_key_values` before transformers 5.2x) and returns
            `logits` and the cache under the same name.
        prefix_embeds: `(B, P, H)` prefix embeddings, left padded.
        prefix_mask: `(B, P)` 1 on valid prefix positions.
        log_probs: return log-softmax scores (float32, as `generate`'s beam search); False returns raw
            float32 logits, whose argmax is exactly `generate`'s greedy choice (log-softmax rounding
            can tie two nearly equal logits).
    """

    def __init__(
        self, llm: PreTrainedModel, prefix_embeds: Tensor, prefix_mask: Tensor, log_probs: bool = True
    ) -> None:
        check_prefix(prefix_embeds, prefix_mask)
        self._llm = llm
        self._prefix = prefix_embeds
        self._mask = prefix_mask.long()
        self._next_position = self._mask.sum(dim=1)
        self._cache = None
        self._log_probs = log_probs
        accepts = inspect.signature(llm.forward).parameters
        # Only the last position's logits are needed; models that support it skip the rest of the prefix.
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        # transformers >= 5.2x names the KV cache `cache` (input and output); earlier `past_key_values`.
        self._cache_name = "cache" if "cache" in accepts else "past_key_values"

    @property
    def batch_size(self) -> int:
        """Number of prefixes B."""
        return self._prefix.shape[0]

    def _scores(self, logits: Tensor) -> Tensor:
        logits = logits[:, -1, :].float()
        return logits.log_softmax(dim=-1) if self._log_probs else logits

    @torch.no_grad()
    def start(self) -> Tensor:
        """Run the prefixes; returns next-token scores `(B, V)`."""
        positions = (self._mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self._llm(
            inputs_embeds=self._prefix,
            attention_mask=self._mask,
            position_ids=positions,
            use_cache=True,
            **self._last_only,
        )
        self._cache = out[self._cache_name]
        return self._scores(out.logits)

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """Feed `tokens (N,)`; returns next-token scores `(N, V)`."""
        if self._cache is None:
            raise RuntimeError("CausalLMScorer.step called before start")
        self._mask = torch.cat([self._mask, self._mask.new_ones(self._mask.shape[0], 1)], dim=1)
        out = self._llm(
            input_ids=tokens[:, None],
            attention_mask=self._mask,
            position_ids=self._next_position[:, None],
            use_cache=True,
            **{self._cache_name: self._cache},
        )
        self._next_position = self._next_position + 1
        self._cache = out[self._cache_name]
        return self._scores(out.logits)

    def select(self, rows: Tensor) -> None:
        """Keep rows `rows (N',)` of the cache, mask and positions, in that order."""
        if self._cache is None:
            raise RuntimeError("CausalLMScorer.select called before start")
        self._cache.reorder_cache(rows)
        self._mask = self._mask[rows]
        self._next_position = self._next_position[rows]
