"""The training loss averaged over all ranks, the quantity data-parallel training optimises."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class GlobalLossLogger(L.Callback):
    """Log ``train/loss_global``: each batch's loss averaged over the ranks (one all-reduce per batch).

    The stages log their rank-local ``train/loss``; on W ranks with equal per-rank batches the mean of
    the local means is the loss whose gradient the optimizer follows, comparable to a one-process run
    on the same global batch.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        pl_module.log(
            "train/loss_global",
            loss.detach().float(),
            on_step=True,
            on_epoch=False,
            sync_dist=True,
            batch_size=1,
        )
