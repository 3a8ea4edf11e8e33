"""Synthetic speech-like shards (harmonic tones in noise) for tests and data benchmarks without a corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import webdataset as wds

from seed_asr.data.audio import SAMPLE_RATE, encode_flac


def synthetic_wave(rng: np.random.Generator, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced-sounding (S,) float32 signal: a gliding harmonic tone with syllable-like envelope + noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    wave = 0.2 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def synthetic_record(key: str, seconds: float) -> dict:
    """A JSON record following the shard contract (docs/interfaces.md)."""
    return {
        "text": f"utterance {key}",
        "lang": "en",
        "domain": "synthetic",
        "speaker": "tone",
        "duration": round(seconds, 3),
        "context": {"history": "", "keywords": [key], "entities": []},
        "dialogue": "",
    }


def write_synthetic_shards(
    folder: str | Path,
    n_shards: int,
    per_shard: int,
    min_seconds: float = 0.5,
    max_seconds: float = 4.0,
    seed: int = 0,
    prefix: str = "shard",
) -> list[Path]:
    """Write ``n_shards`` tar shards of ``per_shard`` utterances with uniform random durations.

    Keys are ``<prefix>-<shard>-<index>`` so every sample is unique across shard sets.

    Returns:
        The shard paths, ``<folder>/<prefix>-000000.tar`` ...
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(n_shards):
        path = folder / f"{prefix}-{shard:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for index in range(per_shard):
                key = f"{prefix}-{shard:04d}-{index:05d}"
                seconds = float(rng.uniform(min_seconds, max_seconds))
                writer.write(
                    {
                        "__key__": key,
                        "flac": encode_flac(synthetic_wave(rng, seconds)),
                        "json": json.dumps(synthetic_record(key, seconds)).encode(),
                    }
                )
        paths.append(path)
    return paths
