"""Each stage's LightningModule, built from its Hydra config with debug=tiny, overfits one fixed batch
through its own training_step (the optimizer its config names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from stage_helpers import build


@pytest.mark.parametrize(("stage", "steps", "ratio"), [("lm", 40, 0.5), ("sft", 30, 0.6), ("ssl", 30, 0.7)])
def test_stage_overfits_a_fixed_batch(
    stage: str, steps: int, ratio: float, tiny_corpus: Path, tmp_path: Path, one_thread: None
) -> None:
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
