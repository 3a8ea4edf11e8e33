"""Batched Kaldi-compatible log-mel fbank, SpecAugment and global mean/variance normalisation.

torchaudio (which has a per-utterance Kaldi fbank) pins an older torch, so the fbank is written here in
plain torch: batched over padded waveforms, so it runs as a few large ops on any device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms at 16 kHz


def frame_lengths(audio_lens: torch.Tensor, window: int = WINDOW, hop: int = HOP) -> torch.Tensor:
    """Number of frames Kaldi's snip_edges framing gives, ``1 + (len - window) // hop`` (0 when too short).

    Args:
        audio_lens: (B,) valid samples.

    Returns:
        (B,) int64 frame counts.
    """
    lens = audio_lens.long()
    return torch.where(lens >= window, 1 + (lens - window).div(hop, rounding_mode="floor"), 0)


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def kaldi_mel_banks(
    n_mels: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Kaldi's triangular mel filters (triangles in mel space, Nyquist bin unused).

    Args:
        n_mels: number of filters.
        n_fft: FFT size (padded window).
        sample_rate: Hz.
        low_freq: lowest edge in Hz.
        high_freq: highest edge in Hz; <= 0 means offset from Nyquist, as in Kaldi.

    Returns:
        (n_fft // 2 + 1, n_mels) float32 weights.
    """
    nyquist = sample_rate / 2
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= low_freq < high_freq <= {nyquist}: {low_freq}, {high}"
        )
    mel_low, mel_high = (
        _mel(torch.tensor(float(low_freq), dtype=torch.float64)),
        _mel(torch.tensor(float(high), dtype=torch.float64)),
    )
    delta = (mel_high - mel_low) / (n_mels + 1)
    left = mel_low + delta * torch.arange(n_mels, dtype=torch.float64)
    center, right = left + delta, left + 2 * delta
    bins = _mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[:, None]
    rising = (bins - left) / (center - left)
    falling = (right - bins) / (right - center)
    weights = torch.where(bins <= center, rising, falling)
    weights = torch.where((bins > left) & (bins < right), weights, torch.zeros_like(weights))
    return torch.cat([weights, weights.new_zeros(1, n_mels)]).float()


class Fbank(nn.Module):
    """Kaldi-compatible log-mel filterbank over a padded batch (snip_edges framing, povey window).

    Args:
        n_mels: mel filters (feature dimension D).
        sample_rate: input rate in Hz.
        frame_length_ms: window length.
        frame_shift_ms: hop.
        preemphasis: pre-emphasis coefficient (Kaldi: 0.97).
        dither: std of Gaussian dither added to the samples (0 disables; Kaldi's default is 1 on int16 scale).
        low_freq: lowest mel edge in Hz.
        high_freq: highest mel edge in Hz (<= 0: offset from Nyquist).
        log_floor: floor on mel energies before the log (Kaldi: float epsilon).
    """

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16_000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        preemphasis: float = 0.97,
        dither: float = 0.0,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        log_floor: float = torch.finfo(torch.float32).eps,
    ) -> None:
        super().__init__()
        self.window_length = int(sample_rate * frame_length_ms / 1000)
        self.hop = int(sample_rate * frame_shift_ms / 1000)
        self.n_fft = 1 << math.ceil(math.log2(self.window_length))
        self.preemphasis, self.dither, self.log_floor = preemphasis, dither, log_floor
        hann = torch.hann_window(self.window_length, periodic=False, dtype=torch.float64)
        window = hann.pow(0.85).float()
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("window_spectrum", torch.fft.rfft(window, n=self.n_fft), persistent=False)
        banks = kaldi_mel_banks(n_mels, self.n_fft, sample_rate, low_freq, high_freq)
        self.register_buffer("mel_banks", banks, persistent=False)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute features.

        Args:
            audio: (B, S) waveforms, zero padded.
            audio_lens: (B,) valid samples.

        Returns:
            feats: (B, T, n_mels) float32 log-mel energies, zero beyond each ``feat_lens``;
                T = frames of the longest valid length.
            feat_lens: (B,) int64 valid frames.
        """
        if audio.dim() != 2:
            raise ValueError(f"audio must be (B, S), got shape {tuple(audio.shape)}")
        feat_lens = frame_lengths(audio_lens, self.window_length, self.hop)
        n_frames = int(feat_lens.max()) if feat_lens.numel() else 0
        batch = audio.shape[0]
        if n_frames == 0:
            return audio.new_zeros(batch, 0, self.mel_banks.shape[1]), feat_lens
        audio = audio[:, : (n_frames - 1) * self.hop + self.window_length].float()
        if self.dither > 0:
            audio = audio + self.dither * torch.randn_like(audio)
        # Kaldi removes each frame's mean, then pre-emphasises inside the frame. Pre-emphasising the whole
        # waveform once gives the same frame values up to the constant -(1 - c) * mean (removed below in
        # the spectrum, where it is mean * rfft(window)), except at sample 0, where the povey window is 0.
        # This saves two passes over the (B, T, W) frames, which dominate the cost.
        means = audio.unfold(1, self.window_length, self.hop).mean(dim=-1)  # (B, T)
        emphasised = torch.cat([audio[:, :1], audio[:, 1:] - self.preemphasis * audio[:, :-1]], dim=1)
        spectrum = torch.fft.rfft(
            emphasised.unfold(1, self.window_length, self.hop) * self.window, n=self.n_fft
        )
        spectrum = spectrum - ((1 - self.preemphasis) * means)[..., None] * self.window_spectrum
        power = spectrum.real.square() + spectrum.imag.square()
        feats = (power @ self.mel_banks).clamp_min(self.log_floor).log()
        valid = torch.arange(n_frames, device=audio.device) < feat_lens[:, None].to(audio.device)
        return feats * valid[..., None], feat_lens


class GlobalCMVN(nn.Module):
    """Global mean/variance normalisation with fixed statistics, ``(x - mean) / std``.

    Args:
        mean: (D,) feature means.
        std: (D,) feature standard deviations (> 0).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(
                f"CMVN mean and std must be equal (D,) vectors: {tuple(mean.shape)}, {tuple(std.shape)}"
            )
        if bool((std <= 0).any()):
            raise ValueError("CMVN std must be positive")
        self.register_buffer("mean", mean.float(), persistent=False)
        self.register_buffer("inv_std", 1.0 / std.float(), persistent=False)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        """Normalise (B, T, D) features, keeping frames beyond ``feat_lens`` (B,) at zero."""
        valid = torch.arange(feats.shape[1], device=feats.device) < feat_lens[:, None].to(feats.device)
        return (feats - self.mean) * self.inv_std * valid[..., None]


class SpecAugment(nn.Module):
    """SpecAugment frequency and time masking (masked values set to ``fill``), inside valid frames only.

    Args:
        freq_masks: frequency masks per utterance.
        freq_width: largest frequency-mask width in bins.
        time_masks: time masks per utterance.
        time_width: largest time-mask width in frames.
        time_width_ratio: time masks are also at most this fraction of the utterance's valid frames.
        fill: value written into masked cells (0 = the mean after normalisation).
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 10,
        time_width: int = 40,
        time_width_ratio: float = 0.05,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        if min(freq_masks, freq_width, time_masks, time_width) < 0 or not 0 <= time_width_ratio <= 1:
            raise ValueError("SpecAugment counts and widths must be >= 0 and time_width_ratio in [0, 1]")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.time_width_ratio = time_masks, time_width, time_width_ratio
        self.fill = fill

    @staticmethod
    def _masks(n_masks: int, max_width: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
        """(B, size) bool: union of ``n_masks`` spans of width U[0, max_width] starting inside [0, extent)."""
        batch = extent.shape[0]
        width = (torch.rand(batch, n_masks, device=extent.device) * (max_width[:, None] + 1)).long()
        room = (extent[:, None] - width).clamp_min(0)
        start = (torch.rand(batch, n_masks, device=extent.device) * (room + 1)).long()
        pos = torch.arange(size, device=extent.device)[None, None, :]
        return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        """Mask (B, T, D) features; time masks stay within each utterance's ``feat_lens`` (B,)."""
        batch, frames, dim = feats.shape
        lens = feat_lens.to(feats.device).long()
        mask = feats.new_zeros(batch, frames, dim, dtype=torch.bool)
        if self.freq_masks and self.freq_width:
            width = torch.full((batch,), min(self.freq_width, dim), device=feats.device)
            full = torch.full((batch,), dim, device=feats.device)
            mask |= self._masks(self.freq_masks, width, full, dim)[:, None, :]
        if self.time_masks and self.time_width and frames:
            width = (lens.float() * self.time_width_ratio).long().clamp(max=self.time_width)
            mask |= self._masks(self.time_masks, width, lens, frames)[:, :, None]
        return feats.masked_fill(mask, self.fill)


class FeatureExtractor(nn.Module):
    """Waveforms -> normalised fbank, with SpecAugment on request (the ``feats`` of the batch contract).

    Args:
        fbank: the filterbank.
        cmvn: global normalisation.
        spec_augment: masking applied when ``augment=True`` (None: never).
    """

    def __init__(self, fbank: Fbank, cmvn: GlobalCMVN, spec_augment: SpecAugment | None = None) -> None:
        super().__init__()
        self.fbank, self.cmvn, self.spec_augment = fbank, cmvn, spec_augment

    @torch.no_grad()
    def forward(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, augment: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) audio and (B,) lengths -> (B, T, D) features and (B,) int64 frame counts."""
        feats, feat_lens = self.fbank(audio, audio_lens)
        feats = self.cmvn(feats, feat_lens)
        if augment and self.spec_augment is not None:
            feats = self.spec_augment(feats, feat_lens)
        return feats, feat_lens.to(feats.device)
