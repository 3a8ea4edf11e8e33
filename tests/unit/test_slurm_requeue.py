"""SlurmRequeue: the pre-timeout signal gives a checkpoint at a step boundary and a stop; resume continues."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seed_asr.callbacks.slurm_requeue import SlurmRequeue


class SignalAtStep(BoringModel):
    """Sends SIGUSR1 to its own process in the middle of training step ``at_step`` (``None``: never)."""

    def __init__(self, at_step: int | None) -> None:
        super().__init__()
        self.at_step = at_step

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR1)
        return out


def trainer(callback: SlurmRequeue, max_steps: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0,
    )


def test_signal_checkpoints_the_step_and_stops_then_resume_reaches_max_steps(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    before = signal.getsignal(signal.SIGUSR1)
    callback = SlurmRequeue(checkpoint_path=str(path), job_id=None)
    with pytest.raises(SIGTERMException):
        trainer(callback, max_steps=20).fit(SignalAtStep(at_step=3))
    assert signal.getsignal(signal.SIGUSR1) is before  # handler restored
    # the signal came during step index 3; the checkpoint is taken once that step has finished
    assert torch.load(path, weights_only=True)["global_step"] == 4

    resumed = trainer(SlurmRequeue(checkpoint_path=str(path)), max_steps=20)
    resumed.fit(SignalAtStep(at_step=None), ckpt_path=str(path))
    assert resumed.global_step == 20
    assert torch.load(path, weights_only=True)["global_step"] == 4  # no signal: the file is untouched


def test_no_signal_no_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    run = trainer(SlurmRequeue(checkpoint_path=str(path)), max_steps=3)
    run.fit(SignalAtStep(at_step=None))
    assert run.global_step == 3 and not path.exists()


def test_unknown_signal_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="SIGUSR9"):
        SlurmRequeue(checkpoint_path="x.ckpt", signal_name="SIGUSR9")
