"""Audio decoding and resampling shared by the corpus builder, shard conversion, the training and
evaluation readers and ``seed-asr transcribe``.

One rule for every reader of audio (:func:`read_audio`): audio holding NaN or Inf is refused; float audio
peaking above full scale is scaled down to peak 1.0 (not clipped); a multi-channel file whose channels
cancel in the down-mix (anti-phase) keeps its loudest channel instead of becoming silence. What was
changed is returned, so callers can count it.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AUDIO_PROBLEMS = ("undecodable", "empty", "non_finite")
CANCEL_RATIO = 0.1  # a down-mix quieter than this fraction of the loudest channel (RMS): channels cancel
SILENT_RMS = 1e-4  # channels quieter than this (RMS, full scale 1.0) are silent, not cancelling
AudioSource = bytes | str | Path | IO[bytes]  # encoded file contents, a file path or a binary file


class AudioError(ValueError):
    """Raised when audio cannot be used; the message names the source.

    Attributes:
        reason: one of ``AUDIO_PROBLEMS``.
    """

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """Audio read by :func:`read_audio`.

    Attributes:
        wave: (S,) float32 mono samples in [-1, 1].
        scale: the factor the samples were multiplied by (< 1 when the source peaked above full scale).
        channel: the channel kept when the channels cancelled in the down-mix, else None.
    """

    wave: np.ndarray
    scale: float = 1.0
    channel: int | None = None

    def notes(self) -> list[str]:
        """What was changed to make the audio usable, one phrase per change (empty: nothing)."""
        notes = [f"peak above full scale, scaled by {self.scale:.3g}"] if self.scale != 1.0 else []
        if self.channel is not None:
            notes.append(f"channels cancel in the down-mix (anti-phase), kept channel {self.channel}")
        return notes


@lru_cache(maxsize=64)
def lowpass_taps(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter of polyphase resampling by ``up / down`` (the one
    ``scipy.signal.resample_poly`` designs by default: Kaiser window, beta 5, 20 x max(up, down) + 1 taps),
    designed once per ratio instead of once per call. Read-only (K,) float64."""
    rate = max(up, down)
    taps = firwin(20 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    taps.flags.writeable = False
    return taps


def _ratio(sr_in: int, sr_out: int) -> tuple[int, int]:
    g = gcd(sr_in, sr_out)
    return sr_out // g, sr_in // g


def resampled_length(samples: int, sr_in: int, sr_out: int = SAMPLE_RATE) -> int:
    """Samples :func:`resample` makes of ``samples`` at ``sr_in``: ceil(samples * up / down)."""
    up, down = _ratio(sr_in, sr_out)
    return -(-samples * up // down)


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
    up, down = _ratio(sr_in, sr_out)
    taps = lowpass_taps(up, down).astype(wave.dtype if wave.dtype.kind == "f" else np.float64)
    return resample_poly(wave, up, down, window=taps).astype(np.float32)


def _rms(x: np.ndarray) -> np.ndarray:
    """RMS over the first axis, in float64 (no overflow for loud float audio)."""
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=0))


def downmix(channels: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(S, C) -> (S,) mean of the channels, or the loudest channel when the mean is near silent while the
    channels are not (they cancel). Returns the mono signal and the channel kept (None: the mean)."""
    if channels.shape[1] == 1:
        return channels[:, 0], None
    mono = channels.mean(axis=1)
    loudness = _rms(channels)
    loudest = int(loudness.argmax())
    if loudness[loudest] > SILENT_RMS and _rms(mono) < CANCEL_RATIO * loudness[loudest]:
        return channels[:, loudest], loudest
    return mono, None


def _label(data: AudioSource, name: str | None) -> str:
    return name or (str(data) if isinstance(data, (str, Path)) else "<bytes>")


def read_audio(data: AudioSource, sr: int = SAMPLE_RATE, name: str | None = None) -> Decoded:
    """Decode FLAC/WAV/OGG (bytes, a path or a binary file), down-mix to mono, resample, and apply the
    module's rule for unusable audio.

    Args:
        data: encoded file contents, a file path or a readable binary file.
        sr: output sample rate.
        name: how to name the source in errors (defaults to the path).

    Returns:
        The (S,) float32 waveform at ``sr`` in [-1, 1] and what was changed.

    Raises:
        AudioError: undecodable, empty or non-finite audio (``reason`` says which).
    """
    channels, sr_in = _decode(data, _label(data, name))
    mono, channel = downmix(channels)
    peak = float(np.abs(mono).max())
    scale = 1.0 / peak if peak > 1.0 else 1.0
    # polyphase filtering can overshoot full scale by a little: clipping that keeps the [-1, 1] promise
    wave = np.clip(resample(mono * np.float32(scale), sr_in, sr), -1.0, 1.0)
    return Decoded(wave, scale, channel)


def _decode(data: AudioSource, label: str) -> tuple[np.ndarray, int]:
    """(S, C) float32 samples and their rate.

    Raises:
        AudioError: undecodable, empty or non-finite audio.
    """
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        channels, sr_in = sf.read(src, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad input
        raise AudioError(f"cannot decode audio {label}: {err}") from err
    if channels.size == 0:
        raise AudioError(f"audio {label} is empty", "empty")
    bad = channels.size - int(np.isfinite(channels).sum())
    if bad:
        raise AudioError(f"audio {label} holds {bad} NaN/Inf samples of {channels.size}", "non_finite")
    return channels, sr_in


def decode_audio(data: AudioSource, sr: int = SAMPLE_RATE, name: str | None = None) -> np.ndarray:
    """:func:`read_audio`'s (S,) float32 waveform; what was changed is logged as a warning."""
    decoded = read_audio(data, sr, name)
    for note in decoded.notes():
        log.warning("audio %s: %s", _label(data, name), note)
    return decoded.wave


def audio_seconds(data: AudioSource, sr: int = SAMPLE_RATE, name: str | None = None) -> float:
    """Seconds of the waveform :func:`read_audio` returns for ``data``, found by the same decoding and
    checks (without down-mixing and resampling): where one raises, so does the other.

    Raises:
        AudioError: undecodable, empty or non-finite audio (``reason`` says which).
    """
    channels, sr_in = _decode(data, _label(data, name))
    return resampled_length(channels.shape[0], sr_in, sr) / sr


def encode_flac(wave: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Encode a (S,) float waveform as 16-bit FLAC bytes (samples beyond [-1, 1] are clipped)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
