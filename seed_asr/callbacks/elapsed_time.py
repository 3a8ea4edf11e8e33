"""Logs the wall time a run has trained, so learning curves can be read against minutes, not steps."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class ElapsedTime(L.Callback):
    """Log ``time/elapsed_min``: minutes of ``fit`` so far (validation included), at every validation and
    every ``log_every_n_steps``. A resumed run continues the count from its checkpoint."""

    def __init__(self) -> None:
        self._before = 0.0  # minutes of earlier invocations of this run (from the checkpoint)
        self._start = time.monotonic()

    def elapsed_min(self) -> float:
        return self._before + (time.monotonic() - self._start) / 60

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:
            pl_module.log("time/elapsed_min", self.elapsed_min(), rank_zero_only=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/elapsed_min", self.elapsed_min(), rank_zero_only=True)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_min": self.elapsed_min()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._before = float(state_dict["elapsed_min"])
