"""An integer `trainer.val_check_interval` counts training batches across epochs, also when it is longer
than an epoch (the text stage's epoch is its transcripts; a streamed epoch is data.batches_per_epoch)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

from seed_asr.train import count_validation_steps_across_epochs


class CountedValidation(BoringModel):
    """BoringModel (64 training batches per epoch) that records the global step of each validation."""

    def __init__(self) -> None:
        super().__init__()
        self.validated_at: list[int] = []

    def on_validation_epoch_start(self) -> None:
        self.validated_at.append(self.trainer.global_step)


def trainer_config(tmp_path: Path, interval: int | None) -> OmegaConf:
    return OmegaConf.create({
        "_target_": "lightning.pytorch.Trainer", "default_root_dir": str(tmp_path), "max_steps": 210,
        "val_check_interval": interval, "check_val_every_n_epoch": 1, "limit_val_batches": 1,
        "num_sanity_val_steps": 0, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False,
    })


def test_an_interval_longer_than_an_epoch_validates_every_interval_batches(tmp_path: Path) -> None:
    cfg = trainer_config(tmp_path, 100)
    count_validation_steps_across_epochs(cfg)
    assert cfg.check_val_every_n_epoch is None
    model = CountedValidation()
    trainer: L.Trainer = instantiate(cfg)
    trainer.fit(model)
    assert model.validated_at == [100, 200]


def test_no_interval_keeps_validation_at_each_epoch_end(tmp_path: Path) -> None:
    cfg = trainer_config(tmp_path, None)
    count_validation_steps_across_epochs(cfg)
    assert cfg.check_val_every_n_epoch == 1
    model = CountedValidation()
    instantiate(cfg).fit(model)
    assert model.validated_at == [64, 128, 192]
