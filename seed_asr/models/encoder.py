"""Conformer audio encoder: fbank (B, T, 80) -> 40 ms frames (B, T', D); plain Transformer blocks on request.

Written here rather than taken from a library: torchaudio's Conformer would pin an older torch, and
transformers has no standalone Conformer with rotary self-attention and a key padding mask. Every
sub-module keeps padded frames from leaking into valid ones, so a sample's output does not depend on
the batch it is padded into.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class EncoderOutput:
    """What an audio encoder returns.

    Attributes:
        hidden: (B, T', D) output of the last block.
        lens: (B,) valid frames of each sample.
        hidden_states: per-block outputs, each (B, T', D) (index i = block i, 0-based), or None.
    """

    hidden: torch.Tensor
    lens: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


def padding_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True at valid positions."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions (4x in time) and a projection to d_model.

    Without padding, output frame j only sees input frames [4j, 4j + 6], so valid outputs depend
    only on valid inputs.
    """

    def __init__(self, input_dim: int, d_model: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(lens: torch.Tensor) -> torch.Tensor:
        """Valid output frames for (B,) valid input frames: ((L - 1) // 2 - 1) // 2."""
        return ((lens - 1) // 2 - 1) // 2

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T', d_model)."""
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.dropout(self.proj(x.transpose(1, 2).reshape(b, t, c * f)))


class FeedForward(nn.Module):
    """Pre-norm feed-forward: LayerNorm -> Linear -> SiLU -> Linear, with dropout."""

    def __init__(self, d_model: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ff_mult * d_model),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.net(x)


def rotary_tables(length: int, dim: int, device: torch.device, base: float = 10000.0) -> torch.Tensor:
    """Angles of rotary position embedding: (length, dim // 2)."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    return torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of (B, H, T, d) by (T, d/2) angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class RotarySelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions and a key padding mask."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 2:
            raise ValueError(f"d_model={d_model} must split into num_heads={num_heads} heads of even size")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = dropout
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), valid (B, T) bool -> (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.num_heads, d // self.num_heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, T, d_head)
        angles = rotary_tables(t, d // self.num_heads, x.device)
        q, k = apply_rotary(q, angles), apply_rotary(k, angles)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid[:, None, None, :], dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.dropout(self.out(y.transpose(1, 2).reshape(b, t, d)))


class ConvModule(nn.Module):
    """Pointwise conv + GLU -> depthwise conv -> LayerNorm -> SiLU -> pointwise conv.

    LayerNorm instead of BatchNorm keeps a sample's output independent of the batch; padded frames
    are zeroed before the depthwise convolution so they cannot reach valid frames.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {kernel_size}")
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.conv_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), valid (B, T) bool -> (B, T, D)."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        y = y.masked_fill(~valid[..., None], 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        y = F.silu(self.conv_norm(y))
        return self.dropout(self.pointwise_out(y))


class ConformerBlock(nn.Module):
    """Macaron Conformer block: FF/2 -> MHSA -> conv -> FF/2 -> LayerNorm (all residual)."""

    def __init__(self, d_model: int, num_heads: int, ff_mult: int, conv_kernel: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn = RotarySelfAttention(d_model, num_heads, dropout)
        self.conv = ConvModule(d_model, conv_kernel, dropout)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), valid (B, T) bool -> (B, T, D)."""
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, valid)
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: MHSA -> FF -> LayerNorm (residual; no convolution, no macaron halves)."""

    def __init__(self, d_model: int, num_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.attn = RotarySelfAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), valid (B, T) bool -> (B, T, D)."""
        x = x + self.attn(x, valid)
        return self.norm(x + self.ff(x))


BLOCK_KINDS = ("conformer", "transformer")


class ConformerEncoder(nn.Module):
    """Conv2d subsampling (4x: 10 ms fbank -> 40 ms frames) followed by Conformer (or Transformer) blocks.

    Args:
        input_dim: fbank bins.
        d_model: model width D.
        num_layers: Conformer blocks.
        num_heads: attention heads (d_model / num_heads must be even for rotary positions).
        ff_mult: feed-forward width as a multiple of d_model.
        conv_kernel: depthwise convolution kernel (odd).
        dropout: dropout everywhere (residual branches, attention weights, subsampling output).
        subsampling_channels: channels of the subsampling convolutions (default d_model).
        activation_checkpointing: recompute each block in backward (saves memory for large models).
        block: "conformer" (macaron FF, MHSA, convolution) or "transformer" (MHSA, FF: `conv_kernel`
            unused), both with rotary positions and the same padding guarantees.
    """

    subsampling = 4
    min_input_frames = 7

    def __init__(
        self,
        input_dim: int = 80,
        d_model: int = 256,
        num_layers: int = 12,
        num_heads: int = 4,
        ff_mult: int = 4,
        conv_kernel: int = 15,
        dropout: float = 0.1,
        subsampling_channels: int | None = None,
        activation_checkpointing: bool = False,
        block: str = "conformer",
    ) -> None:
        super().__init__()
        if block not in BLOCK_KINDS:
            raise ValueError(f"encoder block must be one of {BLOCK_KINDS}, got {block!r}")
        self.input_dim = input_dim
        self.d_model = d_model
        self.activation_checkpointing = activation_checkpointing
        self.subsample = Conv2dSubsampling(input_dim, d_model, subsampling_channels or d_model, dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ff_mult, conv_kernel, dropout)
            if block == "conformer"
            else TransformerBlock(d_model, num_heads, ff_mult, dropout)
            for _ in range(num_layers)
        )

    output_lengths = staticmethod(Conv2dSubsampling.output_lengths)

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, output_hidden_states: bool = False
    ) -> EncoderOutput:
        """Encode a right-padded batch.

        Args:
            feats: (B, T, input_dim) fbank; values past feat_lens are ignored.
            feat_lens: (B,) valid frames, each at least `min_input_frames`.
            output_hidden_states: also return every block's output.

        Returns:
            EncoderOutput with hidden (B, T', D), lens (B,) = output_lengths(feat_lens), T' = max lens.
        """
        check_feats(feats, feat_lens, self.input_dim, self.min_input_frames)
        feats = feats.masked_fill(~padding_mask(feat_lens, feats.shape[1])[..., None], 0.0)
        # DeepSpeed bf16/fp16 keeps the weights themselves in half precision (no autocast): follow them
        x = self.subsample(feats.to(next(self.subsample.parameters()).dtype))
        lens = self.output_lengths(feat_lens)
        x = x[:, : int(lens.max())]
        valid = padding_mask(lens, x.shape[1])
        states = []
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, valid, use_reentrant=False)
            else:
                x = block(x, valid)
            states.append(x)
        return EncoderOutput(x, lens, tuple(states) if output_hidden_states else None)


def check_feats(feats: torch.Tensor, feat_lens: torch.Tensor, input_dim: int, min_frames: int) -> None:
    """Raise ValueError naming the problem when a feature batch does not fit an encoder."""
    if feats.dim() != 3 or feats.shape[-1] != input_dim:
        raise ValueError(f"feats must be (B, T, {input_dim}), got {tuple(feats.shape)}")
    if feat_lens.shape != (feats.shape[0],):
        raise ValueError(f"feat_lens must be ({feats.shape[0]},), got {tuple(feat_lens.shape)}")
    if int(feat_lens.max()) > feats.shape[1] or int(feat_lens.min()) < min_frames:
        raise ValueError(
            f"feat_lens must lie in [{min_frames}, {feats.shape[1]}] frames, got {feat_lens.tolist()}"
        )
