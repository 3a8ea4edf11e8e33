"""Span masking for masked-prediction pre-training (BEST-RQ / LUISE).

Masks are drawn at the encoder's frame rate (one frame = ``stack`` input fbank frames) and applied
to the input by replacing the covered fbank frames with Gaussian noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_device(generator: torch.Generator | None, default: torch.device) -> torch.device:
    """Where random numbers are drawn: the generator's device, else ``default``."""
    return generator.device if generator is not None else default


def fit_length(x: Tensor, length: int) -> Tensor:
    """Zero-pad or truncate ``x`` (B, T, ...) along dim 1 to ``length``."""
    if x.shape[1] >= length:
        return x[:, :length]
    pad = [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]]
    return F.pad(x, pad)


def span_mask(
    lens: Tensor,
    mask_prob: float = 0.01,
    span: int = 10,
    generator: torch.Generator | None = None,
    num_frames: int | None = None,
    min_spans: int = 0,
) -> Tensor:
    """Random spans at the encoder's frame rate.

    Every valid frame starts a span with probability ``mask_prob``; a span covers ``span`` frames,
    cut at the sequence's length. Far from the start of a sequence a frame is masked with probability
    ``1 - (1 - mask_prob) ** span``.

    Args:
        lens: valid encoder frames (B,).
        mask_prob: probability that a frame starts a span.
        span: frames per span (10 = 400 ms at 40 ms frames).
        generator: random source (its device is used for sampling).
        num_frames: T' of the result (default ``lens.max()``).
        min_spans: sequences with fewer sampled starts get extra ones drawn uniformly over their valid
            frames until they have this many (1 guarantees a loss on every non-empty sequence).

    Returns:
        Mask (B, T') bool on ``lens.device``; True = masked.
    """
    if not 0 <= mask_prob <= 1:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if span < 1 or min_spans < 0:
        raise ValueError(f"span must be >= 1 and min_spans >= 0, got span={span}, min_spans={min_spans}")
    num_frames = int(lens.max()) if num_frames is None else num_frames
    if lens.numel() and int(lens.max()) > num_frames:
        raise ValueError(f"lens up to {int(lens.max())} exceed num_frames={num_frames}")
    device = sample_device(generator, lens.device)
    lens_s = lens.to(device)
    valid = torch.arange(num_frames, device=device) < lens_s.unsqueeze(1)
    starts = (torch.rand(valid.shape, generator=generator, device=device) < mask_prob) & valid
    for _ in range(min_spans):
        short = (starts.sum(1) < min_spans) & (lens_s > 0)
        # Uniform draw among valid frames that do not start a span yet.
        score = torch.rand(valid.shape, generator=generator, device=device).masked_fill(~valid | starts, -1)
        pick = F.one_hot(score.argmax(1), num_frames).bool() & short.unsqueeze(1) & valid & ~starts
        starts |= pick
    # A frame is masked when a span started at one of the `span` frames up to and including it.
    covered = F.max_pool1d(F.pad(starts.float().unsqueeze(1), (span - 1, 0)), span, stride=1).squeeze(1)
    return (covered.bool() & valid).to(lens.device)


def apply_input_mask(
    feats: Tensor,
    mask: Tensor,
    stack: int = 4,
    noise_std: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace the fbank frames under masked encoder frames with N(0, noise_std^2) noise.

    Encoder frame j covers input frames ``[j * stack, (j + 1) * stack)``; input frames past
    ``T' * stack`` are never masked.

    Args:
        feats: normalised fbank (B, T, F).
        mask: encoder-frame mask (B, T') bool.
        stack: input frames per encoder frame (the encoder's subsampling).
        noise_std: standard deviation of the replacement noise.
        generator: random source of the noise (its device is used for sampling).

    Returns:
        A new tensor (B, T, F); ``feats`` is left unchanged.
    """
    if mask.dim() != 2 or mask.shape[0] != feats.shape[0]:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, T') with B = feats' {feats.shape[0]}")
    input_mask = fit_length(mask.repeat_interleave(stack, dim=1), feats.shape[1]).to(feats.device)
    noise = torch.randn(feats.shape, generator=generator, device=sample_device(generator, feats.device))
    noise = noise.to(device=feats.device, dtype=feats.dtype) * noise_std
    return torch.where(input_mask.unsqueeze(-1), noise, feats)
