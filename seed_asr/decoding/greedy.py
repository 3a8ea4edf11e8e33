"""Batched greedy decoding with a KV cache from left-padded embedding prefixes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from seed_asr.decoding.repetition import RepetitionGuard
from seed_asr.decoding.scorer import CausalLMScorer, Scorer, check_max_new_tokens


@dataclass
class DecodeResult:
    """Greedy transcripts of a batch.

    Attributes:
        tokens: B token lists, without the end-of-sequence token.
        scores: `(B,)` float32 summed log-probabilities of the returned tokens (and of eos when chosen).
        stop_reasons: B of "eos", "length" (hit max_new_tokens) or "repeat" (repetition guard).
    """

    tokens: list[list[int]]
    scores: Tensor
    stop_reasons: list[str]


def greedy_search(
    scorer: Scorer,
    batch_size: int,
    eos_id: int,
    max_new_tokens: int | Tensor,
    repetition_guard: RepetitionGuard | None = None,
) -> DecodeResult:
    """Greedy decoding of `batch_size` rows of `scorer`; finished rows leave the batch at once.

    Args:
        scorer: next-token scorer over `batch_size` prefixes (log-probabilities or raw logits).
        batch_size: number of prefixes B.
        eos_id: end-of-sequence token id.
        max_new_tokens: cap on generated tokens, an int or a `(B,)` tensor (e.g. from audio duration).
        repetition_guard: stops looping rows (see `RepetitionGuard`); None turns it off.

    Returns:
        A `DecodeResult`.
    """
    first = scorer.start()
    caps = check_max_new_tokens(max_new_tokens, batch_size, first.device)
    generated = torch.zeros(batch_size, int(caps.max()), dtype=torch.long, device=first.device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=first.device)
    token_logprobs = torch.zeros(generated.shape, dtype=torch.float32, device=first.device)
    reasons = ["length"] * batch_size
    live = torch.arange(batch_size, device=first.device)  # utterance of each scorer row
    step_scores = first
    for t in range(generated.shape[1]):
        choice = step_scores.argmax(dim=-1)
        token_logprobs[live, t] = step_scores.log_softmax(dim=-1).gather(1, choice[:, None]).squeeze(1)
        generated[live, t] = choice
        is_eos = choice == eos_id
        lengths[live] = t + 1 - is_eos.long()
        done = is_eos | (t + 1 >= caps[live])
        if repetition_guard is not None:
            period = repetition_guard.loop_period(generated[live, : t + 1])
            looped = (period > 0) & ~is_eos
            lengths[live[looped]] -= period[looped]
            done |= looped
            for row in live[looped].tolist():
                reasons[row] = "repeat"
        for row in live[is_eos].tolist():
            reasons[row] = "eos"
        if done.all():
            break
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            scorer.select(keep)
            live, choice = live[keep], choice[keep]
        step_scores = scorer.step(choice)
    tokens = [generated[i, : lengths[i]].tolist() for i in range(batch_size)]
    scored = lengths + torch.tensor([r == "eos" for r in reasons], device=lengths.device)
    scored_positions = torch.arange(generated.shape[1], device=lengths.device) < scored[:, None]
    scores = (token_logprobs * scored_positions).sum(dim=1)
    return DecodeResult(tokens=tokens, scores=scores, stop_reasons=reasons)


def greedy_decode(
    llm: PreTrainedModel,
    prefix_embeds: Tensor,
    prefix_mask: Tensor,
    eos_id: int,
    max_new_tokens: int | Tensor,
    repetition_guard: RepetitionGuard | None = None,
) -> DecodeResult:
    """Greedy decoding of a Hugging Face causal LM from left-padded embedding prefixes.

    Gives the tokens of `llm.generate(inputs_embeds=prefix_embeds, attention_mask=prefix_mask,
    do_sample=False, num_beams=1)` (cut at eos), with per-utterance caps and an optional loop guard.

    Args:
        llm: Hugging Face causal LM.
        prefix_embeds: `(B, P, H)` prefix embeddings, left padded.
        prefix_mask: `(B, P)` 1 on valid prefix positions.
        eos_id: end-of-sequence token id.
        max_new_tokens: int or `(B,)` tensor of caps on generated tokens.
        repetition_guard: stops looping rows; None turns it off.

    Returns:
        A `DecodeResult`.
    """
    scorer = CausalLMScorer(llm, prefix_embeds, prefix_mask, log_probs=False)
    return greedy_search(scorer, prefix_embeds.shape[0], eos_id, max_new_tokens, repetition_guard)
