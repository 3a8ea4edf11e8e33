"""Each stage's LightningModule, built from its Hydra config with debug=tiny, overfits one fixed batch
through its own training_step (the optimizer its config names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict

CONF = Path(__file__).resolve().parents[2] / "conf"


def build(stage: str, corpus: Path, tmp_path: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"stage={stage}", "debug=tiny", f"paths.corpus_dir={corpus}"]
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.stage.scheduler = None  # a constant learning rate for the overfit check
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    if hasattr(datamodule, "on_after_batch_transfer"):
        batch = datamodule.on_after_batch_transfer(batch, 0)
    module = instantiate(cfg.stage.module, cfg=cfg, _recursive_=False)
    module.configure_model()
    return module, batch


@pytest.mark.parametrize(("stage", "steps", "ratio"), [("lm", 40, 0.5), ("sft", 30, 0.6), ("ssl", 30, 0.7)])
def test_stage_overfits_a_fixed_batch(
    stage: str, steps: int, ratio: float, tiny_corpus: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    module, batch = build(stage, tiny_corpus, tmp_path)
    optimizer = module.configure_optimizers()
    module.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < ratio * losses[0], losses
