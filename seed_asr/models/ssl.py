"""Masked-prediction pre-training of the encoder (LUISE, BEST-RQ style): head and one step.

The step: label frames from the unmasked input (``ssl_targets``), mask input spans with noise
(``masking``), run the encoder, and score its predictions on the masked frames only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seed_asr.losses.cross_entropy import masked_prediction_loss
from seed_asr.models.masking import apply_input_mask, span_mask


class SSLHead(nn.Module):
    """One linear classifier per codebook over the encoder's frames."""

    def __init__(self, d_model: int, codebook_size: int = 8192, num_codebooks: int = 1) -> None:
        """Args: d_model: encoder width; codebook_size: classes per codebook; num_codebooks: classifiers."""
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d_model, codebook_size) for _ in range(num_codebooks))

    def forward(self, hidden: Tensor) -> Tensor | list[Tensor]:
        """Args: hidden: (B, T', D). Returns: logits (B, T', C), or a list of them for several codebooks."""
        logits = [proj(hidden) for proj in self.proj]
        return logits[0] if len(logits) == 1 else logits


@dataclass(frozen=True)
class MaskConfig:
    """Masking of one SSL step.

    Attributes:
        mask_prob: probability that an encoder frame starts a span (BEST-RQ: 0.01).
        span: encoder frames per span (10 = 400 ms at 40 ms frames).
        noise_std: standard deviation of the noise that replaces masked input frames (BEST-RQ: 0.1).
        min_spans: spans every non-empty utterance gets at least (short utterances rarely draw one
            at mask_prob 0.01; 0 = pure BEST-RQ sampling).
    """

    mask_prob: float = 0.01
    span: int = 10
    noise_std: float = 0.1
    min_spans: int = 1


def ssl_step(
    encoder: nn.Module,
    head: nn.Module,
    target_fn: Callable[[Tensor, Tensor], Tensor],
    batch: Mapping[str, Tensor],
    mask_cfg: MaskConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One masked-prediction step (forward and loss; the caller runs backward).

    Args:
        encoder: ``encoder(feats, feat_lens) -> (hidden (B, T', D), lens (B,), ...)`` with
            ``output_lengths(feat_lens)`` and ``subsampling`` (the project's Conformer).
        head: maps hidden (B, T', D) to logits (see ``SSLHead``).
        target_fn: ``(feats, feat_lens) -> labels (B, T'[, N])`` computed from the unmasked input:
            a ``RandomProjectionQuantizer`` or a ``KMeansTarget``.
        batch: ``feats`` (B, T, 80) normalised fbank and ``feat_lens`` (B,).
        mask_cfg: masking settings.
        generator: random source of the mask and the noise.

    Returns:
        ``loss`` (with grad), ``acc`` (masked-frame accuracy) and ``mask_frac`` (masked share of the
        valid encoder frames), all scalars.
    """
    feats, feat_lens = batch["feats"], batch["feat_lens"]
    with torch.no_grad():
        labels = target_fn(feats, feat_lens)
    out_lens = encoder.output_lengths(feat_lens)
    mask = span_mask(
        out_lens,
        mask_cfg.mask_prob,
        mask_cfg.span,
        generator=generator,
        num_frames=labels.shape[1],
        min_spans=mask_cfg.min_spans,
    )
    masked_feats = apply_input_mask(feats, mask, encoder.subsampling, mask_cfg.noise_std, generator)
    out = encoder(masked_feats, feat_lens)
    if out.hidden.shape[1] != labels.shape[1] or not torch.equal(out.lens, out_lens):
        raise ValueError(
            f"encoder frames (T'={out.hidden.shape[1]}, lens {out.lens.tolist()}) disagree with its "
            f"output_lengths / the targets (T'={labels.shape[1]}, lens {out_lens.tolist()})"
        )
    loss, acc = masked_prediction_loss(head(out.hidden), labels, mask)
    return {"loss": loss, "acc": acc, "mask_frac": mask.sum() / out_lens.sum().clamp_min(1)}
