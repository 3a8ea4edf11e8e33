"""Detection of hallucination loops: the same n-gram repeated back to back at the end of a hypothesis."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RepetitionGuard:
    """Stops a hypothesis whose last n-gram (n <= `max_ngram`) repeats more than `max_repeats` times in a row.

    With `max_ngram=4, max_repeats=3`, "a b a b a b a b" (the bigram "a b" four times) is a loop.
    The decoders then stop that hypothesis and cut the last copy, keeping `max_repeats` copies.

    Args:
        max_ngram: longest loop period looked for, in tokens.
        max_repeats: consecutive copies allowed; one more is a loop.
    """

    max_ngram: int = 4
    max_repeats: int = 3

    def __post_init__(self) -> None:
        if self.max_ngram < 1:
            raise ValueError(f"RepetitionGuard.max_ngram must be >= 1, got {self.max_ngram}")
        if self.max_repeats < 1:
            raise ValueError(f"RepetitionGuard.max_repeats must be >= 1, got {self.max_repeats}")

    def loop_period(self, tokens: Tensor) -> Tensor:
        """Smallest period n of a loop that ends each row, 0 where there is none.

        Args:
            tokens: `(N, T)` generated tokens, all T valid.

        Returns:
            `(N,)` int64 loop periods.
        """
        period = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        copies = self.max_repeats + 1
        for n in range(self.max_ngram, 0, -1):  # descending, so the smallest period is written last
            if tokens.shape[1] < n * copies:
                continue
            tail = tokens[:, -n * copies :].reshape(tokens.shape[0], copies, n)
            looped = (tail == tail[:, -1:, :]).all(dim=2).all(dim=1)
            period = torch.where(looped, n, period)
        return period
