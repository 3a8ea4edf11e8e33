"""In-memory batches that are the same global batches for any number of ranks.

The streaming pipeline (``ShardDataModule``) gives each rank its own shards and shuffles, so a run on
W ranks never sees the same batches as a run on one process. Distributed-parity tests and throughput
benchmarks need the opposite: global batch ``i`` is fixed (transcripts of the training shards, synthetic
audio of one length), and rank ``r`` of ``W`` trains on rows ``[r * B / W, (r + 1) * B / W)`` of it.
Every utterance has the same duration and (after ``text_chars`` cropping) the same transcript length,
so the mean of the per-rank mean losses equals the single-process mean loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from seed_asr.data.cmvn import load_cmvn
from seed_asr.data.datamodule import SpeechDataModule
from seed_asr.data.features import Fbank, FeatureExtractor, GlobalCMVN
from seed_asr.data.pipeline import Collator, Utterance
from seed_asr.data.records import iter_records
from seed_asr.testing.synthetic import synthetic_wave

NUM_MELS = 80


class _Batches(IterableDataset):
    """A fixed list of batches (iterable, so Lightning adds no distributed sampler)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FixedBatchDataModule(SpeechDataModule):
    """Fixed global batches of synthetic audio with the training shards' transcripts.

    Batches follow the ShardDataModule contract (``audio``, ``audio_lens``, ``keys``, ``texts``,
    ``metas``, ``stats``; ``feats`` (B, T, 80) and ``feat_lens`` (B,) added on transfer, without
    SpecAugment, so steps are deterministic).

    Args:
        train_shards: shards whose records give the transcripts (and the tokenizer's training text).
        global_batch_size: utterances per global batch (divisible by the world size).
        num_batches: global batches per epoch.
        val_batches: global batches of the validation loader (0: no validation).
        seconds: duration of every utterance.
        text_chars: transcripts are cropped to this many characters (None: kept; then the records'
            transcripts must already have one length for per-rank means to weigh samples equally).
        cmvn_path: CMVN statistics (JSON); None: identity normalisation.
        seed: seed of the synthetic audio.
        rank: this process's rank (default: the trainer's).
        world_size: number of ranks (default: the trainer's).
    """

    def __init__(
        self,
        train_shards: str | Sequence[str],
        global_batch_size: int = 4,
        num_batches: int = 4,
        val_batches: int = 0,
        seconds: float = 1.0,
        text_chars: int | None = 16,
        cmvn_path: str | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(rank, world_size)
        if global_batch_size < 1 or num_batches < 1 or val_batches < 0 or seconds <= 0:
            raise ValueError(
                "need global_batch_size >= 1, num_batches >= 1, val_batches >= 0 and seconds > 0, got "
                f"{global_batch_size}, {num_batches}, {val_batches}, {seconds}"
            )
        self.train_shards, self.global_batch_size = train_shards, global_batch_size
        self.num_batches, self.val_batches = num_batches, val_batches
        self.seconds, self.text_chars, self.cmvn_path, self.seed = seconds, text_chars, cmvn_path, seed
        self.collator = Collator()
        self._global: list[list[Utterance]] = []

    def setup(self, stage: str | None = None) -> None:
        """Build the global batches (once) and the feature extractor."""
        if self.global_batch_size % self.world_size:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} is not divisible by the world size "
                f"{self.world_size}"
            )
        if self.features is None:
            if self.cmvn_path is not None:
                stats = load_cmvn(self.cmvn_path)
                cmvn = GlobalCMVN(stats.mean, stats.std)
            else:
                cmvn = GlobalCMVN(torch.zeros(NUM_MELS), torch.ones(NUM_MELS))
            self.features = FeatureExtractor(Fbank(n_mels=NUM_MELS), cmvn)
        if not self._global:
            self._global = self._make_global_batches()

    def _make_global_batches(self) -> list[list[Utterance]]:
        records = list(itertools.islice(iter_records(self.train_shards), 10_000))
        if not records:
            raise ValueError(f"no records in train_shards={self.train_shards}")
        rng = np.random.default_rng(self.seed)
        total = self.global_batch_size * (self.num_batches + self.val_batches)
        utterances = []
        for i, record in zip(range(total), itertools.cycle(records)):
            text = record["text"] if self.text_chars is None else record["text"][: self.text_chars]
            meta = {**record, "text": text}
            utterances.append(Utterance(f"{record['__key__']}#{i}", synthetic_wave(rng, self.seconds), meta))
        g = self.global_batch_size
        return [utterances[i : i + g] for i in range(0, total, g)]

    def _rank_batches(self, global_batches: list[list[Utterance]]) -> list[dict[str, Any]]:
        share = self.global_batch_size // self.world_size
        lo = self.rank * share
        return [self.collator(batch[lo : lo + share]) for batch in global_batches]

    def train_dataloader(self) -> DataLoader:
        """This rank's share of each training batch."""
        return DataLoader(_Batches(self._rank_batches(self._global[: self.num_batches])), batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        """This rank's share of each validation batch (none when ``val_batches`` is 0)."""
        if not self.val_batches:
            return []
        return DataLoader(_Batches(self._rank_batches(self._global[self.num_batches :])), batch_size=None)
