"""Additive background noise at a chosen signal-to-noise ratio, generated from a seed.

Hand-written: the pink shaping is three lines of numpy, not worth a dependency.
"""

from __future__ import annotations

import numpy as np

NOISE_COLORS: tuple[str, ...] = ("white", "pink")


def make_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise.

    Args:
        num_samples: length S.
        color: "white" (flat spectrum) or "pink" (power falling as 1/f).
        rng: source of randomness.

    Returns:
        (S,) float32 with mean square 1.
    """
    if color not in NOISE_COLORS:
        raise ValueError(f"unknown noise color {color!r}; choose from {NOISE_COLORS}")
    noise = rng.standard_normal(num_samples)
    if num_samples < 2:
        return np.zeros(num_samples, np.float32)
    if color == "pink":
        spectrum = np.fft.rfft(noise)
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0  # keep the DC bin finite
        noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=num_samples)
    noise -= noise.mean()
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """Mix noise into ``wave`` so that 10 log10(P_wave / P_noise) = ``snr_db``.

    Args:
        wave: (S,) float32 speech.
        snr_db: signal-to-noise ratio in dB over the whole utterance.
        color: see :func:`make_noise`.
        rng: source of randomness.

    Returns:
        (S,) float32 noisy speech.
    """
    power = float(np.mean(wave.astype(np.float64) ** 2))
    noise = make_noise(wave.size, color, rng)
    return (wave + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)
