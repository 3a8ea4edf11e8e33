"""Logs the data pipeline's per-batch statistics (``batch["stats"]``): skipped samples and padding."""

from __future__ import annotations

from typing import Any

import lightning as L


class DataStatsLogger(L.Callback):
    """Log ``<split>/data_skipped_<reason>`` (epoch sums over all ranks) and ``<split>/data_padding``.

    The DataModule's collator puts in each batch the samples skipped since the previous batch of the
    same worker, so the epoch sums count every skipped sample exactly once.
    """

    def _log(self, pl_module: L.LightningModule, split: str, batch: Any) -> None:
        stats = batch.get("stats") if isinstance(batch, dict) else None
        if not stats:
            return
        size = len(batch.get("keys", ())) or 1
        for name, value in stats.items():
            if name.startswith("skipped_"):
                pl_module.log(
                    f"{split}/data_{name}",
                    float(value),
                    on_step=False,
                    on_epoch=True,
                    reduce_fx="sum",
                    sync_dist=True,
                    batch_size=size,
                )
        pl_module.log(
            f"{split}/data_padding",
            float(stats["padding_fraction"]),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=size,
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._log(pl_module, "train", batch)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._log(pl_module, "val", batch)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._log(pl_module, "test", batch)
