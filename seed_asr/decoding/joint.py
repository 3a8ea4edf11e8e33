"""Joint context-aware / context-free scoring (Seed-ASR's joint beam search).

Hypotheses are ranked by `alpha * log P(y | x, c) + (1 - alpha) * log P(y | x)`: the same model with
and without the context in its prompt. Expansions that the context-free model finds very unlikely
(next-token log-probability more than `prune_threshold` below its best next token for that hypothesis)
are dropped, so a misleading context cannot pull in words that the audio does not support.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seed_asr.decoding.scorer import Scorer


@dataclass(frozen=True)
class JointConfig:
    """Weights and pruning of joint beam search.

    Args:
        alpha: weight of the context-aware log-probability (1 - alpha: the context-free one), in [0, 1].
        prune_threshold: drop a next token whose context-free log-probability is more than this below
            the best context-free next token of the same hypothesis; None keeps every token.
    """

    alpha: float = 0.5
    prune_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"joint.alpha must be in [0, 1], got {self.alpha}")
        if self.prune_threshold is not None and self.prune_threshold < 0:
            raise ValueError(f"joint.prune_threshold must be >= 0 or null, got {self.prune_threshold}")


class JointScorer:
    """Steps a context-aware and a context-free scorer in lockstep and mixes their log-probabilities.

    Both scorers hold the same hypotheses (rows) under different prompts; the search sees one scorer
    whose next-token scores `(N, V)` are `alpha * aware + (1 - alpha) * free`, with pruned tokens at -inf.

    Args:
        aware: log-probability scorer whose prefixes carry the contexts.
        free: log-probability scorer of the same audio without context (same batch size).
        config: weights and pruning.
    """

    def __init__(self, aware: Scorer, free: Scorer, config: JointConfig) -> None:
        self.aware = aware
        self.free = free
        self.config = config

    def combine(self, aware: Tensor, free: Tensor) -> Tensor:
        """`(N, V)` joint scores of `(N, V)` context-aware and context-free log-probabilities.

        A weight of 0 drops its term (so alpha = 1 gives the context-aware scores exactly).
        """
        alpha = self.config.alpha
        terms = [w * s for w, s in ((alpha, aware), (1.0 - alpha, free)) if w != 0.0]
        scores = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        threshold = self.config.prune_threshold
        if threshold is None:
            return scores
        unlikely = free < free.max(dim=-1, keepdim=True).values - threshold
        return scores.masked_fill(unlikely, float("-inf"))

    def start(self) -> Tensor:
        """Run both prefixes; returns `(B, V)` joint next-token scores."""
        return self.combine(self.aware.start(), self.free.start())

    def step(self, tokens: Tensor) -> Tensor:
        """Append `tokens (N,)` to both; returns `(N, V)` joint next-token scores."""
        return self.combine(self.aware.step(tokens), self.free.step(tokens))

    def select(self, rows: Tensor) -> None:
        """Keep rows `rows (N',)` in both scorers."""
        self.aware.select(rows)
        self.free.select(rows)
