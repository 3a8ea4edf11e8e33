"""Audio decoding and resampling shared by the corpus builder, shard conversion and the pipeline."""

from __future__ import annotations

import io
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Raised when audio cannot be decoded or is unusable; the message names the source."""


@lru_cache(maxsize=64)
def lowpass_taps(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter of polyphase resampling by ``up / down`` (the one
    ``scipy.signal.resample_poly`` designs by default: Kaiser window, beta 5, 20 x max(up, down) + 1 taps),
    designed once per ratio instead of once per call. Read-only (K,) float64."""
    rate = max(up, down)
    taps = firwin(20 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    taps.flags.writeable = False
    return taps


def resample(wave: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling.

    Args:
        wave: (S,) float32 samples.
        sr_in: rate of ``wave``.
        sr_out: target rate.

    Returns:
        (S * sr_out / sr_in,) float32 samples.
    """
    if sr_in == sr_out:
        return wave.astype(np.float32, copy=False)
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    taps = lowpass_taps(up, down).astype(wave.dtype if wave.dtype.kind == "f" else np.float64)
    return resample_poly(wave, up, down, window=taps).astype(np.float32)


def decode_audio(data: bytes | str | Path, sr: int = SAMPLE_RATE, name: str | None = None) -> np.ndarray:
    """Decode FLAC/WAV (bytes or a path), down-mix to mono and resample.

    Args:
        data: encoded file contents or a file path.
        sr: output sample rate.
        name: how to name the source in errors (defaults to the path).

    Returns:
        (S,) float32 waveform at ``sr``.

    Raises:
        AudioError: undecodable or empty audio.
    """
    label = name or (str(data) if isinstance(data, (str, Path)) else "<bytes>")
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        wave, sr_in = sf.read(src, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad input
        raise AudioError(f"cannot decode audio {label}: {err}") from err
    if wave.size == 0:
        raise AudioError(f"audio {label} is empty")
    mono = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    return resample(mono, sr_in, sr)


def encode_flac(wave: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Encode a (S,) float waveform as 16-bit FLAC bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
