"""Additive noise: SNR, spectral colour and determinism."""

import numpy as np
import pytest

from seed_asr.corpus.noise import add_noise, make_noise


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_has_the_requested_snr(color, snr_db):
    t = np.arange(32_000) / 16_000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noisy = add_noise(speech, snr_db, color, np.random.default_rng(0))
    noise = noisy.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.01)


def test_pink_noise_power_falls_as_one_over_f():
    power = np.zeros(4097)
    for seed in range(8):
        power += np.abs(np.fft.rfft(make_noise(8192, "pink", np.random.default_rng(seed)))) ** 2
    freqs = np.arange(power.size)
    band = slice(8, 4000)
    slope = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)
    white = np.abs(np.fft.rfft(make_noise(8192, "white", np.random.default_rng(0)))) ** 2
    assert abs(np.polyfit(np.log(freqs[band]), np.log(white[band]), 1)[0]) < 0.1


def test_noise_is_unit_power_and_seeded():
    a = make_noise(5000, "pink", np.random.default_rng(3))
    assert np.mean(a.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
    assert np.array_equal(a, make_noise(5000, "pink", np.random.default_rng(3)))
    assert not np.array_equal(a, make_noise(5000, "pink", np.random.default_rng(4)))
    with pytest.raises(ValueError, match="unknown noise color 'brown'"):
        make_noise(10, "brown", np.random.default_rng(0))
