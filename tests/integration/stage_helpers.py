"""A stage's LightningModule and one training batch, built from the stage's Hydra config with debug=tiny."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict

from seed_asr.train import build_module

CONF = Path(__file__).resolve().parents[2] / "conf"


def build(stage: str, corpus: Path, tmp_path: Path, stage_overrides: dict | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"stage={stage}", "debug=tiny", f"paths.corpus_dir={corpus}"]
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.stage.scheduler = None  # a constant learning rate for the overfit check
        cfg.stage.update(stage_overrides or {})
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    if hasattr(datamodule, "on_after_batch_transfer"):
        batch = datamodule.on_after_batch_transfer(batch, 0)
    module = build_module(cfg)
    module.configure_model()
    return module, batch
