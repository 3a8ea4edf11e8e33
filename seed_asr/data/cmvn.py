"""Global fbank mean/std: accumulate over a sample of utterances, save and load as JSON.

File format (``cmvn.json``): ``{"mean": [D floats], "std": [D floats], "frames": int, "utterances": int}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seed_asr.data.features import Fbank
from seed_asr.data.pipeline import SampleLimits, plain_waves


@dataclass(frozen=True)
class CmvnStats:
    """Per-dimension statistics of log-mel features.

    Attributes:
        mean: (D,) float32 means.
        std: (D,) float32 standard deviations.
        frames: frames they were computed from.
        utterances: utterances they were computed from.
    """

    mean: torch.Tensor
    std: torch.Tensor
    frames: int
    utterances: int


def compute_cmvn(
    waves: Iterable[np.ndarray], fbank: Fbank, max_utterances: int, min_std: float = 1e-5
) -> CmvnStats:
    """Mean and std of ``fbank`` features over the first ``max_utterances`` waveforms.

    Args:
        waves: (S,) float32 16 kHz waveforms.
        fbank: feature extractor.
        max_utterances: how many waveforms to use at most.
        min_std: floor on the std (constant dimensions would otherwise divide by zero).

    Returns:
        The statistics.

    Raises:
        ValueError: when no waveform gives a single frame.
    """
    total = torch.zeros(fbank.mel_banks.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    frames = utterances = 0
    for wave in waves:
        if utterances >= max_utterances:
            break
        feats, lens = fbank(torch.from_numpy(wave)[None], torch.tensor([wave.shape[0]]))
        valid = feats[0, : int(lens[0])].double()
        total += valid.sum(0)
        total_sq += valid.square().sum(0)
        frames += valid.shape[0]
        utterances += 1
    if frames == 0:
        raise ValueError("cannot compute CMVN: no utterance gave a feature frame")
    mean = total / frames
    std = (total_sq / frames - mean.square()).clamp_min(0).sqrt().clamp_min(min_std)
    return CmvnStats(mean.float(), std.float(), frames, utterances)


def save_cmvn(stats: CmvnStats, path: str | Path) -> Path:
    """Write ``stats`` as JSON to ``path`` (parent folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "mean": stats.mean.tolist(),
        "std": stats.std.tolist(),
        "frames": stats.frames,
        "utterances": stats.utterances,
    }
    path.write_text(json.dumps(record, indent=1))
    return path


def load_cmvn(path: str | Path) -> CmvnStats:
    """Read statistics written by :func:`save_cmvn`.

    Raises:
        ValueError: when the file lacks ``mean``/``std`` or they differ in length.
    """
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict) or "mean" not in record or "std" not in record:
        raise ValueError(f"CMVN file {path} must hold 'mean' and 'std' lists")
    mean = torch.tensor(record["mean"], dtype=torch.float32)
    std = torch.tensor(record["std"], dtype=torch.float32)
    if mean.shape != std.shape or mean.dim() != 1:
        raise ValueError(f"CMVN file {path}: mean and std must be lists of equal length")
    return CmvnStats(mean, std, int(record.get("frames", 0)), int(record.get("utterances", 0)))


def write_split_cmvn(
    corpus_dir: str | Path,
    utterances: int = 1000,
    split: str = "train",
    limits: SampleLimits | None = None,
) -> Path:
    """Compute the statistics of a shard folder's ``split`` and save them as ``<corpus_dir>/cmvn.json``.

    Args:
        corpus_dir: folder with ``<split>/*.tar`` shards (the built-in corpus or converted shards).
        utterances: utterances to accumulate over.
        split: the split to read (the training split: statistics never see test audio).
        limits: the utterances kept (None: SampleLimits' defaults, the datamodule's).
    """
    waves = plain_waves([str(Path(corpus_dir) / split / "*.tar")], limits or SampleLimits())
    return save_cmvn(compute_cmvn(waves, Fbank(), utterances), Path(corpus_dir) / "cmvn.json")
