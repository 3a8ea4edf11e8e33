"""Temperature sampling of N transcripts per utterance through the scorer protocol (RL N-best lists)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from seed_asr.decoding.beam import Hypothesis
from seed_asr.decoding.model import SpeechLM
from seed_asr.decoding.scorer import CausalLMScorer, Scorer, check_max_new_tokens


def sample_with_scorer(
    scorer: Scorer,
    batch_size: int,
    eos_id: int,
    *,
    max_new_tokens: int | Tensor,
    num_samples: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Draw `num_samples` sequences per prefix from softmax(log-probabilities / temperature).

    Args:
        scorer: scorer returning next-token log-probabilities `(N, V)` for `batch_size` prefixes.
        batch_size: number of prefixes B.
        eos_id: end-of-sequence token id.
        max_new_tokens: cap on generated tokens, an int or a `(B,)` tensor.
        num_samples: sequences drawn per prefix, S.
        temperature: > 0; 1 samples from the model, lower sharpens towards greedy.
        generator: random generator on the scorer's device (None: the global one).

    Returns:
        B lists of S hypotheses in the order drawn (duplicates possible); `logprob` and `score` are
        the untempered summed log-probability of the tokens, eos included when drawn.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = scorer.start()
    device = logp.device
    caps = check_max_new_tokens(max_new_tokens, batch_size, device)
    rows = torch.arange(batch_size, device=device).repeat_interleave(num_samples)
    scorer.select(rows)
    logp = logp[rows]
    total = batch_size * num_samples
    live = torch.arange(total, device=device)  # sample of each scorer row
    tokens = torch.zeros(total, int(caps.max()), dtype=torch.long, device=device)
    lengths = torch.zeros(total, dtype=torch.long, device=device)
    logprobs = torch.zeros(total, dtype=torch.float32, device=device)
    for t in range(tokens.shape[1]):
        choice = torch.multinomial((logp / temperature).softmax(dim=-1), 1, generator=generator).squeeze(1)
        logprobs[live] += logp.gather(1, choice[:, None]).squeeze(1)
        tokens[live, t] = choice
        is_eos = choice == eos_id
        lengths[live] = t + 1 - is_eos.long()
        done = is_eos | (t + 1 >= caps[live // num_samples])
        if done.all():
            break
        keep = (~done).nonzero().squeeze(1)
        if done.any():
            scorer.select(keep)
        live = live[keep]
        logp = scorer.step(choice[keep])
    hyps = [
        Hypothesis(tokens[i, : lengths[i]].tolist(), float(logprobs[i]), float(logprobs[i]))
        for i in range(total)
    ]
    return [hyps[b * num_samples : (b + 1) * num_samples] for b in range(batch_size)]


@torch.no_grad()
def sample(
    model: SpeechLM,
    batch: Mapping,
    num_samples: int,
    temperature: float = 1.0,
    use_context: bool = False,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """`num_samples` sampled transcripts (token ids) of every utterance of a batch.

    Args:
        model: the speech LM (`seed_asr.decoding.model.SpeechLM`).
        batch: ``feats`` (B, T, 80), ``feat_lens`` (B,), ``metas`` (contexts).
        num_samples: sequences per utterance.
        temperature: sampling temperature (> 0).
        use_context: condition on each utterance's context.
        generator: random generator on the model's device (None: the global one).

    Returns:
        B lists of `num_samples` hypotheses (see `sample_with_scorer`).
    """
    prefix_embeds, prefix_mask, max_new = model.prefix(batch, use_context=use_context)
    return sample_with_scorer(
        CausalLMScorer(model.base_llm, prefix_embeds, prefix_mask),
        prefix_embeds.shape[0],
        model.tokenizer.eos_token_id,
        max_new_tokens=max_new,
        num_samples=num_samples,
        temperature=temperature,
        generator=generator,
    )
