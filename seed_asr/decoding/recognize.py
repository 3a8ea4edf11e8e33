"""Transcribing batches with a SpeechLLM: one entry point for validation, eval, transcribe and RL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from seed_asr.decoding.beam import Hypothesis, beam_search, beam_search_with_scorer
from seed_asr.decoding.greedy import greedy_decode
from seed_asr.decoding.joint import JointConfig, JointScorer
from seed_asr.decoding.model import SpeechLM
from seed_asr.decoding.repetition import RepetitionGuard
from seed_asr.decoding.scorer import CausalLMScorer

METHODS = ("greedy", "beam", "joint_beam")


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode.

    Args:
        method: "greedy", "beam", or "joint_beam" (beam search on the `joint` mix of the
            context-aware and context-free log-probabilities; one audio encoding serves both).
        beam_size: running hypotheses per utterance (beam, joint_beam).
        nbest: hypotheses returned per utterance (beam; <= beam_size).
        length_penalty: exponent of beam-score length normalisation.
        use_context: put each utterance's context (dialogue history, keywords) into the prompt.
        repetition_max_ngram: longest loop period the guard looks for; 0 turns the guard off.
        repetition_max_repeats: consecutive copies of an n-gram allowed.
        joint: weights and pruning of joint_beam (a `JointConfig` or its fields as a mapping).
    """

    method: Literal["greedy", "beam", "joint_beam"] = "greedy"
    beam_size: int = 4
    nbest: int = 1
    length_penalty: float = 1.0
    use_context: bool = False
    repetition_max_ngram: int = 4
    repetition_max_repeats: int = 3
    joint: JointConfig = field(default_factory=JointConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"decoding.method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.joint, Mapping):
            object.__setattr__(self, "joint", JointConfig(**self.joint))
        if self.beam_size < 1 or not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"decoding needs 1 <= nbest ({self.nbest}) <= beam_size ({self.beam_size})")


def _joint_beam(
    model: SpeechLM, batch: Mapping, cfg: DecodingConfig, contexts: Sequence[Mapping | None] | None, guard
) -> list[list[Hypothesis]]:
    """Beam search on `JointScorer` over the context-aware and context-free prefixes of one encoding."""
    audio_embeds, audio_lens, _ = model.encode_audio(batch["feats"], batch["feat_lens"])
    contexts = model.prompt_contexts(batch, cfg.use_context, contexts)
    aware, free = (
        CausalLMScorer(model.base_llm, *model.decoding_prefix(audio_embeds, audio_lens, c))
        for c in (contexts, [None] * len(contexts))
    )
    return beam_search_with_scorer(
        JointScorer(aware, free, cfg.joint),
        len(contexts),
        model.tokenizer.eos_token_id,
        max_new_tokens=model.max_new_tokens(audio_lens),
        beam_size=cfg.beam_size,
        nbest=cfg.nbest,
        length_penalty=cfg.length_penalty,
        repetition_guard=guard,
    )


@torch.no_grad()
def recognize(
    model: SpeechLM, batch: Mapping, cfg: DecodingConfig, contexts: Sequence[Mapping | None] | None = None
) -> list[list[Hypothesis]]:
    """N-best hypotheses (best first) of every utterance of a batch.

    Args:
        model: the speech LM (`seed_asr.decoding.model.SpeechLM`).
        batch: ``feats`` (B, T, 80), ``feat_lens`` (B,), ``metas`` (contexts).
        cfg: decoding settings.
        contexts: B explicit prompt contexts (None each for none); override ``cfg.use_context``.

    Returns:
        B lists of hypotheses; greedy gives one per utterance. Joint beam search's ``logprob`` and
        ``score`` are the joint ones.
    """
    guard = (
        RepetitionGuard(cfg.repetition_max_ngram, cfg.repetition_max_repeats)
        if cfg.repetition_max_ngram > 0
        else None
    )
    if cfg.method == "joint_beam":
        return _joint_beam(model, batch, cfg, contexts, guard)
    prefix_embeds, prefix_mask, max_new = model.prefix(batch, use_context=cfg.use_context, contexts=contexts)
    eos = model.tokenizer.eos_token_id
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


def transcripts(
    model: SpeechLM, batch: Mapping, cfg: DecodingConfig, contexts: Sequence[Mapping | None] | None = None
) -> list[str]:
    """The best hypothesis of every utterance as text (contexts as in `recognize`)."""
    return [model.prompt.decode(nbest[0].tokens) for nbest in recognize(model, batch, cfg, contexts)]
