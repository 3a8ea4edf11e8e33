"""Keep a run's ``last.ckpt`` the state of its latest step, whatever the monitored metric did.

Lightning 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only at a step where it also
saves a top-k checkpoint: a run whose last validation did not improve the metric, or that reaches
``max_steps`` between validations, would end with an older ``last.ckpt``. Here ``ModelCheckpoint`` keeps
only the best checkpoint and this callback owns ``last.ckpt``.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    """Write ``path`` after every validation of ``fit``, every ``every_n_train_steps`` optimizer steps
    (when set), when training ends, and when a SIGTERM stops it (unless already written at that step).
    Lightning stops a run on SIGTERM at the end of the running step, on every rank alike, by raising
    ``SIGTERMException``: the state saved then is that step's.

    A ``Checkpoint`` runs after the other callbacks (Lightning moves checkpoint callbacks to the end, in
    their order), so with ``ModelCheckpoint`` listed first the file records its best score of this
    validation. Writes go through ``trainer.save_checkpoint``: the strategy's checkpoint IO (atomic with
    ``AtomicCheckpointIO``), on every rank, with model, optimizer, schedulers and loop state.

    Args:
        path: the file to write: the run folder's ``checkpoints/last.ckpt``.
        every_n_train_steps: also write every this many optimizer steps (None: only the events above).
    """

    def __init__(self, path: str, every_n_train_steps: int | None = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be None or >= 1, got {every_n_train_steps}")
        self.path = path
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = 0  # nothing to write before the first optimizer step

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume from
        self._saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step != self._saved_step and step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # also after a write at this step: the validation changed callback states (best score, ...)
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        stopped = isinstance(exception, SIGTERMException) and trainer.received_sigterm
        if stopped and trainer.state.fn == TrainerFn.FITTING:
            if trainer.global_step != self._saved_step:
                self._save(trainer)
            log.info("stopped by SIGTERM at step %d: %s holds it", trainer.global_step, self.path)
