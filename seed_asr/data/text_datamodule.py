"""Transcript text of shards for the text-only LM stage (no audio is decoded)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader

from seed_asr.data.parallel import loader_worker_context
from seed_asr.data.pipeline import SampleLimits, skip_sample
from seed_asr.data.records import iter_records

log = logging.getLogger(__name__)


def _collate(records: list[dict]) -> dict[str, list]:
    return {"texts": [r["text"] for r in records], "metas": records}


class TextDataModule(L.LightningDataModule):
    """Batches of ``{"texts": [...], "metas": [...]}`` from the JSON records of shards.

    Map-style, so Lightning's distributed sampler gives every rank the same number of batches.
    Only ``train_shards`` feed training: the LM stage never sees dev or test transcripts.

    Args:
        train_shards: shard paths / globs / brace patterns of the training split.
        val_shards: shards used for validation loss (a held-out split).
        batch_size: sentences per batch.
        num_workers: loader workers.
        max_text_tokens: longer transcripts (in UTF-8 bytes, no fewer than tokens: `SampleLimits`) are
            skipped and counted (None: no limit).
    """

    def __init__(
        self,
        train_shards: str | Sequence[str],
        val_shards: str | Sequence[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        max_text_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.limits = SampleLimits(max_tokens=max_text_tokens)
        self._train: list[dict] = []
        self._val: list[dict] = []

    def setup(self, stage: str | None = None) -> None:
        if not self._train:
            self._train = self._records(self.train_shards)
        if self.val_shards and not self._val:
            self._val = self._records(self.val_shards)

    def _records(self, shards: str | Sequence[str]) -> list[dict]:
        """The usable records of ``shards``; transcripts over ``max_text_tokens`` are named and counted."""
        kept, skipped = [], 0
        for record in iter_records(shards):
            problem = self.limits.text_problem(record["text"], None)
            if problem:
                skip_sample(record["__key__"], *problem)
                skipped += 1
            else:
                kept.append(record)
        if skipped:
            log.warning("left out %d of %d transcripts of %s (too_many_tokens)", skipped, skipped + len(kept),
                        shards)
        return kept

    def _loader(self, records: list[dict], shuffle: bool) -> DataLoader:
        return DataLoader(
            records,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=_collate,
            num_workers=self.num_workers,
            drop_last=shuffle,
            multiprocessing_context=loader_worker_context() if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self._val, shuffle=False) if self._val else []
