"""Label makers of masked-prediction pre-training, one per LUISE round.

Round 1: ``RandomProjectionQuantizer`` (BEST-RQ) labels the normalised fbank input.
Round 2+: ``KMeansTarget`` labels frames with k-means ids of a previous encoder's intermediate layer.
Both are called as ``target(feats (B, T, 80), feat_lens (B,)) -> labels`` at the encoder's frame rate.

Encoders are ``seed_asr.models.encoder.ConformerEncoder`` or anything with its interface:
``encoder(feats, feat_lens, output_hidden_states=False) -> EncoderOutput(hidden (B, T', D), lens (B,),
hidden_states)`` with ``lens = encoder.output_lengths(feat_lens)``, ``T' = lens.max()``, and
``hidden_states[i]`` the output of block i (0-based); ``encoder.subsampling``; ``encoder.d_model``.
Labels follow the same frame convention.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seed_asr.losses.cross_entropy import IGNORE_INDEX
from seed_asr.models.kmeans import KMeansTokenizer, nearest_centroid
from seed_asr.models.masking import fit_length, sample_device


def fill_padding(labels: Tensor, lens: Tensor) -> Tensor:
    """Set ``labels`` (B, T', ...) to IGNORE_INDEX at frames ``t >= lens[b]``."""
    pad = torch.arange(labels.shape[1], device=labels.device) >= lens.to(labels.device).unsqueeze(1)
    return labels.masked_fill(pad.view(*pad.shape, *([1] * (labels.dim() - 2))), IGNORE_INDEX)


class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ tokenizer: frozen random projection of stacked frames, nearest frozen random code.

    ``stack`` consecutive input frames (the encoder's subsampling) are concatenated, projected by a
    Xavier-uniform matrix to ``code_dim``, L2-normalised, and labelled with the nearest L2-normalised
    code of a N(0, 1) codebook. Projection and codebooks are buffers drawn from ``seed``: frozen, saved
    in the state dict (a resumed run keeps its labels) and identical for every rank.
    """

    projection: Tensor
    codebooks: Tensor

    def __init__(
        self,
        input_dim: int = 80,
        stack: int = 4,
        code_dim: int = 16,
        codebook_size: int = 8192,
        num_codebooks: int = 1,
        seed: int = 0,
        output_lengths: Callable[[Tensor], Tensor] | None = None,
        chunk_size: int = 8192,
    ) -> None:
        """Args:
        input_dim: fbank bins per input frame.
        stack: input frames per encoder frame.
        code_dim: projected size.
        codebook_size: codes per codebook.
        num_codebooks: independent projections + codebooks (labels gain a codebook dim when > 1).
        seed: seed of the projection and codebooks.
        output_lengths: the encoder's map from input to output lengths (B,) -> (B,), so labels line
            up with its frames (``ConformerEncoder.output_lengths``); default ``lens // stack``.
        chunk_size: encoder frames per distance matrix (memory is chunk_size x codebook_size).
        """
        super().__init__()
        if min(input_dim, stack, code_dim, codebook_size, num_codebooks) < 1:
            raise ValueError("input_dim, stack, code_dim, codebook_size and num_codebooks must be >= 1")
        self.stack = stack
        self.num_codebooks = num_codebooks
        self.chunk_size = chunk_size
        self._output_lengths = output_lengths
        # drawn on the CPU whatever the default device (Lightning builds modules under the GPU's), so the
        # targets depend on the seed alone
        gen = torch.Generator().manual_seed(seed)
        projection = torch.empty(num_codebooks, input_dim * stack, code_dim, device="cpu")
        for p in projection:
            nn.init.xavier_uniform_(p, generator=gen)
        codebooks = torch.randn(num_codebooks, codebook_size, code_dim, generator=gen, device="cpu")
        codebooks = F.normalize(codebooks, dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebooks", codebooks)

    def output_lengths(self, feat_lens: Tensor) -> Tensor:
        """Encoder frames (B,) for input frames ``feat_lens`` (B,)."""
        if self._output_lengths is None:
            return torch.div(feat_lens, self.stack, rounding_mode="floor")
        return self._output_lengths(feat_lens)

    def stack_frames(self, feats: Tensor, num_frames: int) -> Tensor:
        """Concatenate ``stack`` input frames per encoder frame (j holds ``[j * stack, (j + 1) * stack)``).

        Args: feats: (B, T, F); num_frames: T'. Returns: (B, T', F * stack), the input zero-padded or
        truncated to T' * stack frames.
        """
        b, _, f = feats.shape
        return fit_length(feats, num_frames * self.stack).reshape(b, num_frames, f * self.stack)

    @torch.no_grad()
    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tensor:
        """Label every encoder frame.

        Args:
            feats: mean/variance normalised fbank (B, T, input_dim).
            feat_lens: valid input frames (B,).

        Returns:
            Labels int64, (B, T') for one codebook, (B, T', num_codebooks) otherwise, with
            T' = max(output_lengths(feat_lens)) as the encoder's; IGNORE_INDEX at padded frames.
            Computed in float32, also under autocast, so that mixed precision does not change them.
        """
        expected = self.projection.shape[1] // self.stack
        if feats.dim() != 3 or feats.shape[-1] != expected:
            raise ValueError(f"feats must be (B, T, {expected}), got {tuple(feats.shape)}")
        out_lens = self.output_lengths(feat_lens)
        stacked = self.stack_frames(feats.float(), int(out_lens.max()))
        b, t, _ = stacked.shape
        flat = stacked.reshape(b * t, -1)
        with torch.autocast(flat.device.type, enabled=False):
            labels = torch.stack(
                [
                    nearest_centroid(F.normalize(flat @ proj.float(), dim=-1), codes, self.chunk_size)[0]
                    for proj, codes in zip(self.projection, self.codebooks, strict=True)
                ],
                dim=-1,
            ).view(b, t, self.num_codebooks)
        labels = fill_padding(labels, out_lens)
        return labels.squeeze(-1) if self.num_codebooks == 1 else labels


def layer_features(encoder: nn.Module, feats: Tensor, feat_lens: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """One layer's output of ``encoder``, without gradients.

    Args:
        encoder: ``layer`` indexes its ``hidden_states`` (i = output of block i, 0-based; the report's
            most useful layer ~25 of 32 is index 24).
        feats: (B, T, 80).
        feat_lens: (B,).
        layer: index into ``hidden_states`` (negative counts from the end).

    Returns:
        ``(hidden (B, T', D), lens (B,))``.
    """
    with torch.no_grad():
        out = encoder(feats, feat_lens, output_hidden_states=True)
    count = 0 if out.hidden_states is None else len(out.hidden_states)
    if not -count <= layer < count:
        raise ValueError(f"layer {layer} is out of range: the encoder returned {count} hidden states")
    return out.hidden_states[layer], out.lens


def collect_features(
    encoder: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    layer: int,
    max_frames: int,
    keep_prob: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gather valid (unpadded) frames of one encoder layer, to fit k-means on.

    Args:
        encoder: the previous-round encoder (run in eval mode, its mode restored afterwards).
        batches: dicts with ``feats`` (B, T, 80) and ``feat_lens`` (B,), moved to the encoder's device.
        layer: index into the encoder's ``hidden_states``.
        max_frames: stop once this many frames are gathered.
        keep_prob: fraction of valid frames kept at random (spreads ``max_frames`` over more audio).
        generator: random source of the frame sampling.

    Returns:
        Features (N, D) float32 on the CPU, N <= max_frames.
    """
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    collected: list[Tensor] = []
    total = 0
    try:
        for batch in batches:
            feats, feat_lens = batch["feats"].to(device), batch["feat_lens"].to(device)
            hidden, lens = layer_features(encoder, feats, feat_lens, layer)
            valid = torch.arange(hidden.shape[1], device=device) < lens.unsqueeze(1)
            if keep_prob < 1:
                draw = torch.rand(valid.shape, generator=generator, device=sample_device(generator, device))
                valid &= draw.to(device) < keep_prob
            frames = hidden[valid][: max_frames - total].float().cpu()
            collected.append(frames)
            total += frames.shape[0]
            if total >= max_frames:
                break
    finally:
        encoder.train(was_training)
    if total == 0:
        raise ValueError("collect_features gathered no frames (no batches, or all empty)")
    return torch.cat(collected)


class KMeansTarget(nn.Module):
    """Labels of an iterative round: k-means ids of a frozen previous encoder's layer.

    Called like ``RandomProjectionQuantizer``: ``(feats, feat_lens) -> labels (B, T')``.
    """

    def __init__(self, encoder: nn.Module, tokenizer: KMeansTokenizer, layer: int) -> None:
        """Args: encoder: previous-round encoder (frozen here); tokenizer: fitted k-means; layer: its input.

        ``layer`` indexes the encoder's ``hidden_states``.
        """
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.layer = layer

    def train(self, mode: bool = True) -> KMeansTarget:
        """Keep the frozen encoder in eval mode (no dropout in the targets) whatever ``mode`` is."""
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tensor:
        """Args: feats: (B, T, 80); feat_lens: (B,). Returns: labels (B, T'), IGNORE_INDEX at padding."""
        hidden, lens = layer_features(self.encoder, feats, feat_lens, self.layer)
        return fill_padding(self.tokenizer(hidden), lens)
