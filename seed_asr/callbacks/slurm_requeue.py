"""Checkpoint and requeue a SLURM job on its pre-timeout signal, at a step boundary agreed by every rank.

Lightning 2.6 has SLURM auto-requeue built in (``SLURMEnvironment(auto_requeue=True)``), but its handler saves
the checkpoint from inside the signal handler, which may run in the middle of a backward pass or while
another rank is inside a collective (Lightning issue #21406), and it writes ``hpc_ckpt_<n>.ckpt``, a file that
``ckpt_path=last`` does not read. This callback keeps the handler to setting a flag and does the work in the
training loop: ``conf/cluster/slurm.yaml`` turns Lightning's own requeue off and adds this callback.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class SlurmRequeue(L.Callback):
    """On ``signal_name``: save ``checkpoint_path`` on every rank, requeue ``job_id`` from rank zero, stop.

    The ranks agree on the flag (any rank received the signal) at the end of each training batch, so all
    of them save the same step; then the fit ends by raising Lightning's ``SIGTERMException`` (a clean
    ``SystemExit``: no validation or test runs in the time left). The requeued job resumes with
    ``ckpt_path=last``, which reads ``checkpoint_path``.

    Args:
        checkpoint_path: the file to write: the run folder's ``checkpoints/last.ckpt``.
        job_id: the SLURM job to requeue (``$SLURM_JOB_ID``, also right for array tasks); ``None``
            saves and stops without requeueing.
        signal_name: the signal SLURM sends before the time limit (``#SBATCH --signal=USR1@90``).
    """

    def __init__(
        self, checkpoint_path: str, job_id: str | int | None = None, signal_name: str = "SIGUSR1"
    ) -> None:
        try:
            self.signum = signal.Signals[signal_name]
        except KeyError:
            raise ValueError(f"signal_name={signal_name!r} is not a signal name such as 'SIGUSR1'") from None
        self.checkpoint_path = checkpoint_path
        self.job_id = None if job_id is None else str(job_id)
        self.received = False
        self._previous_handler: Any = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # only a flag: a signal handler can run between any two bytecodes of the training step
        self.received = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's signal connector has recorded the handlers it restores at teardown
        if threading.current_thread() is not threading.main_thread():
            log.warning("SlurmRequeue: not on the main thread, %s is not handled", self.signum.name)
            return
        self.received = False
        self._previous_handler = signal.signal(self.signum, self._on_signal)
        log.info("SlurmRequeue: on %s, checkpoint to %s and requeue job %s",
                 self.signum.name, self.checkpoint_path, self.job_id)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        # the whole state (a collective; it ends with a barrier after the write)
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        log.info("SlurmRequeue: %s received, saved %s at step %d",
                 self.signum.name, self.checkpoint_path, trainer.global_step)
        if trainer.is_global_zero and self.job_id is not None:
            result = subprocess.run(["scontrol", "requeue", self.job_id], capture_output=True, text=True)
            if result.returncode:
                log.error("SlurmRequeue: `scontrol requeue %s` failed: %s", self.job_id,
                          result.stderr.strip())
            else:
                log.info("SlurmRequeue: requeued job %s", self.job_id)
        raise SIGTERMException()
