"""Batched beam search with a KV cache: all B x beam hypotheses go through one forward per step.

The selection rules follow Hugging Face `generate(num_beams=k)` so that the two agree:
- each step keeps the best 2k (beam, token) candidates of an utterance; those among the first k that
  end (eos, or the utterance's token cap reached) join its finished pool, the best k others run on;
- a finished hypothesis scores `logprob / length ** length_penalty`, length counting the eos token;
- the pool keeps the best k; an utterance stops when `early_stopping` says so (True: the pool is full;
  False: the best running logprob divided by its current length's penalty cannot beat the pool's
  worst; "never": the same bound with the utterance's cap as length when length_penalty > 0, which is
  exact, so the search only stops when no running hypothesis can still enter the pool).
They agree with `generate` when the vocabulary has at least 2k tokens (below that `generate` pads the
first step with duplicate beams of score -1e9, this search with empty ones). Unlike `generate`,
finished utterances leave the batch, the prefix runs once per utterance (not once per beam), and each
utterance may have its own token cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from transformers import PreTrainedModel

from seed_asr.decoding.repetition import RepetitionGuard
from seed_asr.decoding.scorer import CausalLMScorer, Scorer, check_max_new_tokens

EarlyStopping = bool | Literal["never"]


@dataclass(frozen=True)
class Hypothesis:
    """One finished hypothesis.

    Attributes:
        tokens: generated tokens without the end-of-sequence token.
        logprob: summed log-probability of the generated tokens (eos included when generated).
        score: `logprob / len ** length_penalty` (len counts eos), the ranking key.
    """

    tokens: list[int]
    logprob: float
    score: float


def _length_norm(lengths: list[int], length_penalty: float, device: torch.device) -> Tensor:
    """`(U,)` float32 `length ** length_penalty`, powers taken in Python floats as `generate` does."""
    return torch.tensor([n**length_penalty for n in lengths], dtype=torch.float32, device=device)


def _gather_beams(values: Tensor, beam: Tensor) -> Tensor:
    """Rows `beam (U, k)` of per-beam histories `values (U, k, T)`."""
    return values.gather(1, beam[:, :, None].expand(-1, -1, values.shape[2]))


class _Pools:
    """Finished hypotheses of each utterance: the best k by score, with their count and worst score."""

    def __init__(self, batch_size: int, k: int, device: torch.device) -> None:
        self.k = k
        self.hypotheses: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
        self.worst = torch.full((batch_size,), float("-inf"), device=device)
        self.size = torch.zeros(batch_size, dtype=torch.long, device=device)

    def offer(self, utt: int, hypothesis: Hypothesis) -> None:
        """Add `hypothesis` to utterance `utt`'s pool if it ranks among the best k."""
        pool = sorted([*self.hypotheses[utt], hypothesis], key=lambda h: -h.score)[: self.k]
        self.hypotheses[utt] = pool
        self.worst[utt] = pool[-1].score
        self.size[utt] = len(pool)


def _finish_loops(
    guard: RepetitionGuard,
    run_tokens: Tensor,
    run_cumulative: Tensor,
    run_scores: Tensor,
    live: Tensor,
    pools: _Pools,
    length_penalty: float,
) -> None:
    """Move running hypotheses that loop to their pool, without the last copy of the loop.

    Args:
        run_tokens: `(U, k, t)` running tokens.
        run_cumulative: `(U, k, t)` summed log-probability after each token.
        run_scores: `(U, k)` running scores; set to -inf (in place) for the looping hypotheses.
    """
    n_live, k, t = run_tokens.shape
    period = guard.loop_period(run_tokens.reshape(n_live * k, t)).view(n_live, k)
    for u, j in ((period > 0) & run_scores.isfinite()).nonzero().tolist():
        kept = t - int(period[u, j])
        logprob = float(run_cumulative[u, j, kept - 1]) if kept else 0.0
        score = logprob / max(kept, 1) ** length_penalty
        pools.offer(int(live[u]), Hypothesis(run_tokens[u, j, :kept].tolist(), logprob, score))
        run_scores[u, j] = float("-inf")


def beam_search_with_scorer(
    scorer: Scorer,
    batch_size: int,
    eos_id: int,
    *,
    max_new_tokens: int | Tensor,
    beam_size: int = 4,
    nbest: int | None = None,
    length_penalty: float = 1.0,
    early_stopping: EarlyStopping = False,
    repetition_guard: RepetitionGuard | None = None,
) -> list[list[Hypothesis]]:
    """Beam search over `batch_size` prefixes of a log-probability `scorer`.

    Args:
        scorer: scorer returning next-token log-probabilities `(N, V)` for `batch_size` prefixes.
        batch_size: number of prefixes B.
        eos_id: end-of-sequence token id.
        max_new_tokens: cap on generated tokens, an int or a `(B,)` tensor.
        beam_size: running hypotheses per utterance, k.
        nbest: hypotheses returned per utterance (<= k); None returns k.
        length_penalty: exponent of the length normalisation; 0 ranks by summed log-probability.
        early_stopping: True, False or "never", as in Hugging Face `generate` (see the module doc).
        repetition_guard: a running hypothesis that loops joins the pool without the loop's last copy
            (scored without eos); None turns it off (as `generate`).

    Returns:
        B lists of at most `nbest` hypotheses, best first.
    """
    k = beam_size
    nbest = k if nbest is None else nbest
    if k < 1:
        raise ValueError(f"beam_size must be >= 1, got {k}")
    if not 1 <= nbest <= k:
        raise ValueError(f"nbest must be in [1, beam_size={k}], got {nbest}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

    logp = scorer.start()
    device, vocab = logp.device, logp.shape[1]
    caps = check_max_new_tokens(max_new_tokens, batch_size, device)
    scorer.select(torch.arange(batch_size, device=device).repeat_interleave(k))
    logp = logp.repeat_interleave(k, dim=0)
    live = torch.arange(batch_size, device=device)  # utterance of each group of k scorer rows
    run_scores = torch.full((batch_size, k), float("-inf"), device=device)
    run_scores[:, 0] = 0.0  # the k rows start identical: only the first one may expand
    run_tokens = torch.zeros(batch_size, k, 0, dtype=torch.long, device=device)
    run_cumulative = torch.zeros(batch_size, k, 0, device=device)  # logprob after each token
    pools = _Pools(batch_size, k, device)

    for t in range(1, int(caps.max()) + 1):  # t: generated length including this step's token
        n_live = live.shape[0]
        candidates = (run_scores[:, :, None] + logp.view(n_live, k, vocab)).view(n_live, k * vocab)
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)
        from_beam, token = top_index // vocab, top_index % vocab
        at_cap = caps[live] <= t
        ends = (token == eos_id) | at_cap[:, None]

        # Candidates among the first k that end join their utterance's pool (rare: a Python loop).
        finishing = ends[:, :k] & top_scores[:, :k].isfinite()
        normalised = top_scores / (t**length_penalty)
        for u, j in finishing.nonzero().tolist():
            prefix = run_tokens[u, from_beam[u, j]].tolist()
            tokens = prefix if int(token[u, j]) == eos_id else [*prefix, int(token[u, j])]
            pools.offer(int(live[u]), Hypothesis(tokens, float(top_scores[u, j]), float(normalised[u, j])))

        # The best k candidates that do not end run on.
        run_scores, pick = top_scores.masked_fill(ends, float("-inf")).topk(k, dim=1)
        beam = from_beam.gather(1, pick)
        next_tokens = token.gather(1, pick)
        run_tokens = torch.cat([_gather_beams(run_tokens, beam), next_tokens[:, :, None]], dim=2)
        run_cumulative = torch.cat([_gather_beams(run_cumulative, beam), run_scores[:, :, None]], dim=2)
        if repetition_guard is not None:
            _finish_loops(
                repetition_guard, run_tokens, run_cumulative, run_scores, live, pools, length_penalty
            )

        full = pools.size[live] >= k
        best_running = run_scores.max(dim=1).values
        if early_stopping is True:
            done = full
        else:
            exact_bound = early_stopping == "never" and length_penalty > 0
            horizon = caps[live].tolist() if exact_bound else [t] * n_live
            best_possible = best_running / _length_norm(horizon, length_penalty, device)
            done = full & (best_possible <= pools.worst[live])
        done = done | at_cap | best_running.isneginf()
        if done.all():
            break
        keep = (~done).nonzero().squeeze(1)
        scorer.select((keep[:, None] * k + beam[keep]).flatten())
        live, run_scores = live[keep], run_scores[keep]
        run_tokens, run_cumulative = run_tokens[keep], run_cumulative[keep]
        logp = scorer.step(next_tokens[keep].flatten())

    return [pool[:nbest] for pool in pools.hypotheses]


def beam_search(
    llm: PreTrainedModel,
    prefix_embeds: Tensor,
    prefix_mask: Tensor,
    eos_id: int,
    *,
    max_new_tokens: int | Tensor,
    beam_size: int = 4,
    nbest: int | None = None,
    length_penalty: float = 1.0,
    early_stopping: EarlyStopping = False,
    repetition_guard: RepetitionGuard | None = None,
) -> list[list[Hypothesis]]:
    """Beam search of a Hugging Face causal LM from left-padded embedding prefixes.

    Args:
        llm: Hugging Face causal LM.
        prefix_embeds: `(B, P, H)` prefix embeddings, left padded.
        prefix_mask: `(B, P)` 1 on valid prefix positions.
        eos_id: end-of-sequence token id.
        max_new_tokens: int or `(B,)` tensor of caps on generated tokens.
        beam_size: running hypotheses per utterance.
        nbest: hypotheses returned per utterance (<= beam_size); None returns beam_size.
        length_penalty: exponent of the length normalisation (`generate`'s default 1.0).
        early_stopping: True, False or "never", as in `generate`.
        repetition_guard: stops looping hypotheses (see `beam_search_with_scorer`); None turns it off.

    Returns:
        B lists of at most `nbest` hypotheses, best first.
    """
    return beam_search_with_scorer(
        CausalLMScorer(llm, prefix_embeds, prefix_mask),
        prefix_embeds.shape[0],
        eos_id,
        max_new_tokens=max_new_tokens,
        beam_size=beam_size,
        nbest=nbest,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        repetition_guard=repetition_guard,
    )
