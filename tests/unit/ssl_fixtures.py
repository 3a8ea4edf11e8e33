"""Helpers of the SSL tests: a tiny Conformer and speech-like fbank features."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import torch
from scipy import signal
from torch import Tensor

from seed_asr.models.encoder import ConformerEncoder

SAMPLE_RATE = 16000


def tiny_conformer(d_model: int = 32, num_layers: int = 2) -> ConformerEncoder:
    """A Conformer small enough for CPU tests."""
    return ConformerEncoder(
        d_model=d_model, num_layers=num_layers, num_heads=2, ff_mult=2, conv_kernel=5, dropout=0.0
    )


# Formants (F1, F2, F3) in Hz of a few vowels, after Peterson & Barney's averages.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]]
)


def speechlike_audio(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced segments (harmonics of a gliding f0 under formant peaks), fricative noise and pauses."""
    pieces = []
    total = int(seconds * SAMPLE_RATE)
    while sum(len(p) for p in pieces) < total:
        n = int(rng.uniform(0.05, 0.2) * SAMPLE_RATE)
        kind = rng.choice(3, p=[0.6, 0.25, 0.15])
        if kind == 0:
            formants = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.85, 1.2)
            f0 = np.linspace(rng.uniform(90, 250), rng.uniform(90, 250), n)
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            x = np.zeros(n)
            for k in range(1, int(7000 / f0.max())):
                f = k * f0.mean()
                gain = sum(1 / (1 + ((f - fm) / (60 + 0.05 * fm)) ** 2) for fm in formants) / k**0.5
                x += gain * np.sin(k * phase)
        elif kind == 1:
            centre = rng.uniform(2000, 7000)
            band = [centre * 0.7, min(centre * 1.3, 7900)]
            sos = signal.butter(4, band, "bandpass", fs=SAMPLE_RATE, output="sos")
            x = signal.sosfilt(sos, rng.standard_normal(n)) * 3
        else:
            x = np.zeros(n)
        pieces.append(x * np.hanning(n) ** 0.3 * rng.uniform(0.3, 1.0))
    audio = np.concatenate(pieces)[:total]
    return (audio / np.abs(audio).max() * 0.5 + 0.003 * rng.standard_normal(total)).astype(np.float32)


def fbank(audio: np.ndarray) -> Tensor:
    """80-bin log-mel fbank (25 ms / 10 ms) of 16 kHz audio in [-1, 1], (T, 80)."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.mel_opts.num_bins = 80
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(SAMPLE_RATE, (audio * 32768).tolist())
    fb.input_finished()
    return torch.from_numpy(np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]))


def speechlike_fbank(num_utts: int, seconds: float, seed: int = 0, normalise: bool = True) -> list[Tensor]:
    """Fbank of ``num_utts`` speech-like utterances, normalised with their global mean and std."""
    rng = np.random.default_rng(seed)
    feats = [fbank(speechlike_audio(seconds, rng)) for _ in range(num_utts)]
    if not normalise:
        return feats
    stacked = torch.cat(feats)
    mean, std = stacked.mean(0), stacked.std(0)
    return [(f - mean) / std for f in feats]
