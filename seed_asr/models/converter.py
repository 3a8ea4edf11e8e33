"""Converter: encoder frames -> audio tokens in the LLM's embedding space."""

from __future__ import annotations

import torch
from torch import nn

from seed_asr.models.encoder import padding_mask


def spliced_lengths(lens: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) frames -> (B,) spliced frames: ceil(lens / k)."""
    return (lens + k - 1) // k


def splice_frames(x: torch.Tensor, lens: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate k adjacent frames.

    Frames past `lens` are zeroed first, then the tail is zero-padded to a multiple of k, so a
    sample's spliced frames do not depend on the padding of its batch.

    Args:
        x: (B, T, D) frames.
        lens: (B,) valid frames.
        k: frames per output frame.

    Returns:
        (B, ceil(T / k), k * D) spliced frames and (B,) lengths ceil(lens / k).
    """
    b, t, d = x.shape
    x = x.masked_fill(~padding_mask(lens, t)[..., None], 0.0)
    x = nn.functional.pad(x, (0, 0, 0, -t % k))
    return x.reshape(b, -1, k * d), spliced_lengths(lens, k)


class Converter(nn.Module):
    """Splice k frames, then Linear -> GELU -> Linear (or one Linear) to the LLM hidden size.

    Args:
        in_dim: encoder width D.
        out_dim: LLM hidden size H.
        splice: k adjacent 40 ms frames per audio token (2 -> 80 ms).
        hidden_dim: MLP width; None for a single Linear (the SLAM-ASR linear projector).
    """

    def __init__(self, in_dim: int, out_dim: int, splice: int = 2, hidden_dim: int | None = 2048) -> None:
        super().__init__()
        if splice < 1:
            raise ValueError(f"splice must be >= 1, got {splice}")
        self.splice = splice
        if hidden_dim is None:
            self.proj = nn.Linear(splice * in_dim, out_dim)
        else:
            self.proj = nn.Sequential(
                nn.Linear(splice * in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
            )

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """(B,) encoder frames -> (B,) audio tokens: ceil(lens / splice)."""
        return spliced_lengths(lens, self.splice)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T', D), (B,) -> audio tokens (B, ceil(T' / k), H) and their lengths (B,)."""
        spliced, out_lens = splice_frames(x, lens, self.splice)
        return self.proj(spliced), out_lens
