"""LightningDataModule over webdataset shards (see docs/interfaces.md for the shard and batch contracts).

Training: each dataset is an endless stream of this worker's shards (explicit node and worker split),
decoded, mixed by weight (``wds.RandomMix``), augmented, filtered by duration and transcript length
(``SampleLimits``) and batched by padded duration with length bucketing; every worker yields
``ceil(batches_per_epoch / workers)`` batches, so every rank runs the same number of batches by
construction.
Validation/test: read each sample exactly once overall with the same batch count on every rank, planned
from the same limits (see ``seed_asr.data.shard_index``).
Skipped samples are named in ``batch["skipped"]``; skip counts and padding travel in ``batch["stats"]``;
``seed_asr.callbacks.data_stats.DataStatsLogger`` logs them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from seed_asr.data.cmvn import CmvnStats, compute_cmvn, load_cmvn, save_cmvn
from seed_asr.data.features import Fbank, FeatureExtractor, GlobalCMVN, SpecAugment
from seed_asr.data.parallel import loader_worker_context
from seed_asr.data.pipeline import (
    Augmenter,
    Collator,
    CycledShards,
    DynamicBatcher,
    Epochs,
    SampleLimits,
    Tokenizer,
    decode_samples,
    expand_shards,
    log_and_continue,
    plain_waves,
)
from seed_asr.data.shard_index import EvalBatches, index_eval_set, plan_eval_batches

log = logging.getLogger(__name__)


def _as_list(value: str | Sequence[Any] | None) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class SpeechDataModule(L.LightningDataModule):
    """What every speech DataModule shares: its rank and world size, and fbank features computed on
    the batch's device after transfer (``feats`` (B, T, 80), ``feat_lens`` (B,); SpecAugment only
    while training, when the feature extractor has one).

    Args:
        rank: this process's rank (default: the trainer's, else 0).
        world_size: number of ranks (default: the trainer's, else 1).
    """

    def __init__(self, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self._rank, self._world_size = rank, world_size
        self.features: FeatureExtractor | None = None

    @property
    def rank(self) -> int:
        """This process's rank: the explicit argument, else the trainer's, else 0."""
        if self._rank is not None:
            return self._rank
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def world_size(self) -> int:
        """Number of ranks: the explicit argument, else the trainer's, else 1."""
        if self._world_size is not None:
            return self._world_size
        return self.trainer.world_size if self.trainer is not None else 1

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Add ``feats`` (B, T, 80) and ``feat_lens`` (B,) on the batch's device (SpecAugment if training)."""
        if self.features is None:
            self.setup()
        audio = batch["audio"]
        self.features.to(audio.device)
        training = self.trainer is not None and self.trainer.training
        batch["feats"], batch["feat_lens"] = self.features(audio, batch["audio_lens"], augment=training)
        return batch


class ShardDataModule(SpeechDataModule):
    """Speech batches from webdataset shards.

    Args:
        train_shards: training datasets, one entry each: a path, glob or brace pattern (several joined
            by ``::``).
        train_weights: mixing weight of each training dataset (default: equal).
        val_shards: validation shards (patterns; all entries form one set).
        test_shards: test shards.
        batches_per_epoch: training batches per epoch on every rank (rounded up to a multiple of
            ``num_workers``).
        max_batch_seconds: padded audio per batch (batch size x longest utterance), in seconds.
        max_batch_size: optional cap on utterances per batch.
        bucket_buffer: utterances sorted together for length bucketing (0: no bucketing).
        min_duration: shorter utterances are skipped and counted (seconds).
        max_duration: longer utterances are skipped and counted (seconds, <= ``max_batch_seconds``).
        max_text_tokens: utterances whose transcript has more tokens are skipped and counted (None: no
            limit); tokens of ``tokenizer``, else UTF-8 bytes (`SampleLimits`).
        max_text_tokens_per_second: likewise for more tokens per second of audio (None: no limit).
        speed_factors: speed perturbation factors (training only).
        noise_prob: probability of additive noise (training only).
        noise_snr_db: (low, high) SNR in dB.
        noise_files: noise recordings (patterns); white noise when empty.
        spec_augment: SpecAugment during training.
        freq_masks: SpecAugment frequency masks.
        freq_width: largest frequency mask (bins).
        time_masks: SpecAugment time masks.
        time_width: largest time mask (frames).
        time_width_ratio: time masks are at most this fraction of the utterance.
        cmvn_path: mean/std JSON; when None it is computed at setup from ``cmvn_utterances`` training
            utterances and saved as ``<output_dir>/cmvn.json``.
        cmvn_utterances: utterances used to compute the statistics.
        output_dir: the run's output folder (where computed statistics are saved).
        num_workers: DataLoader workers per rank.
        persistent_workers: keep workers between epochs.
        prefetch_factor: batches prefetched per worker.
        pin_memory: pin host memory (for GPUs).
        seed: base seed of shuffling and augmentation.
        tokenizer: optional; batches then carry ``text_ids`` and ``context_ids``.
        rank: this process's rank (default: the trainer's, else 0).
        world_size: number of ranks (default: the trainer's, else 1).
    """

    def __init__(
        self,
        train_shards: str | Sequence[str] | None = None,
        train_weights: Sequence[float] | None = None,
        val_shards: str | Sequence[str] | None = None,
        test_shards: str | Sequence[str] | None = None,
        batches_per_epoch: int = 1000,
        max_batch_seconds: float = 120.0,
        max_batch_size: int | None = None,
        bucket_buffer: int = 500,
        min_duration: float = 0.1,
        max_duration: float = 30.0,
        max_text_tokens: int | None = None,
        max_text_tokens_per_second: float | None = None,
        speed_factors: Sequence[float] = (1.0,),
        noise_prob: float = 0.0,
        noise_snr_db: Sequence[float] = (10.0, 30.0),
        noise_files: str | Sequence[str] | None = None,
        spec_augment: bool = True,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 10,
        time_width: int = 40,
        time_width_ratio: float = 0.05,
        cmvn_path: str | None = None,
        cmvn_utterances: int = 500,
        output_dir: str | None = None,
        num_workers: int = 2,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        pin_memory: bool = False,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(rank, world_size)
        self.train_specs = _as_list(train_shards)
        self.train_weights = [float(w) for w in train_weights] if train_weights is not None else None
        if self.train_weights is not None and (
            len(self.train_weights) != len(self.train_specs) or min(self.train_weights) < 0
        ):
            raise ValueError(
                f"need {len(self.train_specs)} non-negative train_weights, got {self.train_weights}"
            )
        if max_duration > max_batch_seconds:
            raise ValueError(
                f"max_duration ({max_duration} s) exceeds max_batch_seconds ({max_batch_seconds} s)"
            )
        if batches_per_epoch < 1 or num_workers < 0:
            raise ValueError("need batches_per_epoch >= 1 and num_workers >= 0")
        self.val_specs, self.test_specs = _as_list(val_shards), _as_list(test_shards)
        self.batches_per_epoch, self.max_batch_seconds = batches_per_epoch, max_batch_seconds
        self.max_batch_size, self.bucket_buffer = max_batch_size, bucket_buffer
        self.limits = SampleLimits(
            min_duration, max_duration, max_text_tokens, max_text_tokens_per_second, tokenizer
        )
        self.speed_factors, self.noise_prob = [float(f) for f in speed_factors], noise_prob
        self.noise_snr_db = (float(noise_snr_db[0]), float(noise_snr_db[1]))
        self.noise_specs = _as_list(noise_files)
        self.spec_augment = (
            SpecAugment(freq_masks, freq_width, time_masks, time_width, time_width_ratio)
            if spec_augment
            else None
        )
        self.cmvn_path, self.cmvn_utterances, self.output_dir = cmvn_path, cmvn_utterances, output_dir
        self.num_workers, self.persistent_workers = num_workers, persistent_workers
        self.prefetch_factor, self.pin_memory = prefetch_factor, pin_memory
        self.seed, self.collator = seed, Collator(tokenizer)

    # ----- set-up -----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load (or compute and save) the normalisation statistics and build the feature extractor."""
        if self.features is None:
            self.features = FeatureExtractor(Fbank(), GlobalCMVN(*self._cmvn_stats()[:2]), self.spec_augment)

    def _cmvn_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cmvn_path is not None:
            stats = load_cmvn(self.cmvn_path)
            return stats.mean, stats.std
        specs = self.train_specs or self.val_specs
        if not specs:
            raise ValueError("cmvn_path is None and there are no train/val shards to compute CMVN from")
        stats = compute_cmvn(self.plain_waves(specs), Fbank(), self.cmvn_utterances)
        self._save_cmvn(stats)
        return stats.mean, stats.std

    def plain_waves(self, specs: list[str]) -> Iterator[np.ndarray]:
        """(S,) waveforms of the shards in order, within this module's duration limits, no augmentation."""
        return plain_waves(specs, self.limits)

    def _save_cmvn(self, stats: CmvnStats) -> None:
        if self.output_dir is None:
            log.warning(
                "computed CMVN from %d utterances; no output_dir, so it is not saved", stats.utterances
            )
        elif self.rank == 0:
            path = save_cmvn(stats, Path(self.output_dir) / "cmvn.json")
            log.info("computed CMVN from %d utterances, saved to %s", stats.utterances, path)

    # ----- loaders --------------------------------------------------------------------------------
    def _loader(self, dataset: IterableDataset) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            pin_memory=self.pin_memory,
            multiprocessing_context=loader_worker_context() if workers > 0 else None,
        )

    def stream_seed(self) -> int:
        """Seed of the training stream: ``seed`` at epoch 0, else mixed with the epoch the loader starts
        in. A run resumed at epoch E (``ckpt_path=last``) thus streams fresh shuffles instead of replaying
        epoch 0's; within a run, each pass over the shards reshuffles anyway (``StreamSeeds``). The
        stream keeps no position inside an epoch: a resumed epoch runs its remaining batch count on
        fresh batches."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return (
            self.seed if epoch == 0 else int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        )

    def train_dataset(self) -> Epochs:
        """The training stream of this rank: ``len()`` batches per epoch, the same on every rank."""
        if not self.train_specs:
            raise ValueError("no train_shards configured")
        seed = self.stream_seed()
        sources = [
            wds.DataPipeline(
                CycledShards(expand_shards(spec), self.rank, self.world_size, seed + index),
                wds.tarfile_to_samples(handler=log_and_continue),
                decode_samples,
            )
            for index, spec in enumerate(self.train_specs)
        ]
        mixed = sources[0] if len(sources) == 1 else wds.RandomMix(sources, probs=self.train_weights)
        noise_files = [path for spec in self.noise_specs for path in expand_shards(spec)]
        augmenter = Augmenter(
            self.speed_factors, self.noise_prob, self.noise_snr_db, noise_files, seed, self.rank
        )
        batcher = DynamicBatcher(
            self.max_batch_seconds, self.max_batch_size, self.bucket_buffer, seed, self.rank
        )
        stages = [mixed, augmenter] if augmenter.active else [mixed]
        per_worker = math.ceil(self.batches_per_epoch / max(1, self.num_workers))
        return Epochs(
            wds.DataPipeline(*stages, self.limits, batcher, self.collator.stage), per_worker, self.num_workers
        )

    def eval_dataset(self, specs: list[str], split: str) -> EvalBatches:
        """This rank's exact-once share of an evaluation set (see ``seed_asr.data.shard_index``); the
        samples left out of the plan are spread over the ranks, so their counts sum to the total once."""
        if not specs:
            raise ValueError(f"no {split}_shards configured")
        shards = [shard for spec in specs for shard in expand_shards(spec)]
        refs, skipped = index_eval_set(shards, self.limits)
        plan = plan_eval_batches(
            [ref.duration for ref in refs], self.max_batch_seconds, self.max_batch_size, self.world_size
        )
        rank, world = self.rank, self.world_size
        return EvalBatches(refs, plan[rank], self.limits, self.collator, skipped[rank::world])

    def train_dataloader(self) -> DataLoader:
        """Training batches (see the module docstring)."""
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader:
        """Validation batches, each sample once over all ranks."""
        return self._loader(self.eval_dataset(self.val_specs, "val"))

    def test_dataloader(self) -> DataLoader:
        """Test batches, each sample once over all ranks."""
        return self._loader(self.eval_dataset(self.test_specs, "test"))
