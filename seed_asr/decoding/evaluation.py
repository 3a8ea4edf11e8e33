"""Decoding a model over batches and scoring it: transcripts collected over all ranks, error rates,
sample tables for the loggers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.data.features import FeatureExtractor
from seed_asr.decoding.model import SpeechLM
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.metrics.wer import WERAccumulator

SAMPLE_ROWS = 16
SAMPLE_AUDIO = 4  # of the sample rows, how many carry their audio to the loggers


class TranscriptCollector:
    """Holds (hypothesis, reference, meta) triples of one validation run on this rank, and the audio
    of the first `SAMPLE_AUDIO` utterances for the loggers."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.rows: list[tuple[str, str, dict]] = []
        self.audio: list[np.ndarray] = []

    def add(self, hyps: list[str], batch: Mapping[str, Any]) -> None:
        """One batch's transcripts against its ``texts``; ``keys``, ``audio`` (B, S) and ``audio_lens`` (B,)
        at `sample_rate` are kept when the batch has them."""
        keys = batch.get("keys") or [None] * len(hyps)
        metas = [m if k is None else {**m, "key": k} for m, k in zip(batch["metas"], keys, strict=True)]
        self.rows.extend(zip(hyps, batch["texts"], metas, strict=True))
        audio, lens = batch.get("audio"), batch.get("audio_lens")
        if audio is not None and lens is not None:
            for wave, n in zip(audio[: SAMPLE_AUDIO - len(self.audio)], lens, strict=False):
                self.audio.append(wave[: int(n)].float().cpu().numpy())

    def reset(self) -> None:
        self.rows = []
        self.audio = []

    def gather(self) -> list[tuple[str, str, dict]]:
        """Every rank's rows (all ranks get the full list, so all log the same metrics)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return list(self.rows)
        parts: list[list] = [None] * dist.get_world_size()  # type: ignore[list-item]
        dist.all_gather_object(parts, self.rows)
        return [row for part in parts for row in part]

    def compute(self) -> dict[str, float]:
        """WER/CER overall and per language / domain over all ranks' rows."""
        acc = WERAccumulator(group_by=("domain",))
        for hyp, ref, meta in self.gather():
            acc.update(hyp, ref, meta, keywords=(meta.get("context") or {}).get("keywords", ()))
        return {k: float(v) for k, v in acc.compute().items() if isinstance(v, (int, float))}

    def log_samples(self, loggers: list[Logger], split: str, step: int) -> None:
        """A table of the first transcripts (wandb: with an audio player for the first `SAMPLE_AUDIO`;
        TensorBoard: a text table and the audio clips)."""
        rows = [
            [m.get("key", ""), m.get("lang", ""), m.get("domain", ""), r, h]
            for h, r, m in self.rows[:SAMPLE_ROWS]
        ]
        columns = ["key", "lang", "domain", "reference", "hypothesis"]
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                players = [wandb.Audio(a, sample_rate=self.sample_rate) for a in self.audio]
                data = [[*r, players[i] if i < len(players) else None] for i, r in enumerate(rows)]
                logger.log_table(key=f"{split}/samples", columns=[*columns, "audio"], data=data, step=step)
            elif isinstance(logger, TensorBoardLogger):
                text = "\n".join(f"| {' | '.join(map(str, r))} |" for r in [columns, *rows])
                logger.experiment.add_text(f"{split}/samples", text, step)
                for i, wave in enumerate(self.audio):
                    tag = f"{split}/audio_{i}"
                    logger.experiment.add_audio(tag, torch.from_numpy(wave), step, self.sample_rate)


@torch.no_grad()
def decode_and_score(
    model: SpeechLM,
    loader: Iterable[Mapping[str, Any]],
    features: FeatureExtractor,
    decoding: DecodingConfig,
    device: torch.device,
) -> dict[str, float]:
    """Validation of any speech LLM outside the trainer, as ``ASRModule`` validates: decode this rank's
    batches (fbank without SpecAugment), gather the transcripts of every rank, and score them.

    Every rank must call it (the transcripts are all-gathered); all get the same metrics.
    """
    collector = TranscriptCollector()
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = with_features(batch, features, device)
        collector.add(transcripts(model, batch, decoding), batch)
    model.train(was_training)
    return collector.compute()


def with_features(
    batch: Mapping[str, Any], features: FeatureExtractor, device: torch.device
) -> dict[str, Any]:
    """A loader batch moved to ``device`` with fbank ``feats`` (B, T, 80) and ``feat_lens`` (B,) added."""
    out = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    features.to(device)
    out["feats"], out["feat_lens"] = features(out["audio"], out["audio_lens"], augment=False)
    return out
