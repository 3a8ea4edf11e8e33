"""Transcribing batches with a SpeechLLM: one entry point for validation, eval, transcribe and RL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from seed_asr.decoding.beam import Hypothesis, beam_search
from seed_asr.decoding.greedy import greedy_decode
from seed_asr.decoding.repetition import RepetitionGuard


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode.

    Args:
        method: "greedy" or "beam".
        beam_size: running hypotheses per utterance (beam).
        nbest: hypotheses returned per utterance (beam; <= beam_size).
        length_penalty: exponent of beam-score length normalisation.
        use_context: put each utterance's context (dialogue history, keywords) into the prompt.
        repetition_max_ngram: longest loop period the guard looks for; 0 turns the guard off.
        repetition_max_repeats: consecutive copies of an n-gram allowed.
    """

    method: Literal["greedy", "beam"] = "greedy"
    beam_size: int = 4
    nbest: int = 1
    length_penalty: float = 1.0
    use_context: bool = False
    repetition_max_ngram: int = 4
    repetition_max_repeats: int = 3

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding.method must be 'greedy' or 'beam', got {self.method!r}")
        if self.beam_size < 1 or not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"decoding needs 1 <= nbest ({self.nbest}) <= beam_size ({self.beam_size})")


@torch.no_grad()
def recognize(model, batch: Mapping, cfg: DecodingConfig) -> list[list[Hypothesis]]:
    """N-best hypotheses (best first) of every utterance of a batch.

    Args:
        model: a ``SpeechLLM`` (``prefix``, ``base_llm``, ``tokenizer``, ``prompt``).
        batch: ``feats`` (B, T, 80), ``feat_lens`` (B,), ``metas`` (contexts).
        cfg: decoding settings.

    Returns:
        B lists of hypotheses; greedy gives one per utterance.
    """
    prefix_embeds, prefix_mask, max_new = model.prefix(batch, use_context=cfg.use_context)
    eos = model.tokenizer.eos_token_id
    guard = (
        RepetitionGuard(cfg.repetition_max_ngram, cfg.repetition_max_repeats)
        if cfg.repetition_max_ngram > 0
        else None
    )
    if cfg.method == "beam":
        return beam_search(
            model.base_llm,
            prefix_embeds,
            prefix_mask,
            eos,
            max_new_tokens=max_new,
            beam_size=cfg.beam_size,
            nbest=cfg.nbest,
            length_penalty=cfg.length_penalty,
            repetition_guard=guard,
        )
    result = greedy_decode(model.base_llm, prefix_embeds, prefix_mask, eos, max_new, guard)
    return [
        [Hypothesis(tokens=t, logprob=float(s), score=float(s))]
        for t, s in zip(result.tokens, result.scores.tolist(), strict=True)
    ]


def transcripts(model, batch: Mapping, cfg: DecodingConfig) -> list[str]:
    """The best hypothesis of every utterance as text."""
    return [model.prompt.decode(nbest[0].tokens) for nbest in recognize(model, batch, cfg)]
