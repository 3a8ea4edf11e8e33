"""Helpers of the distributed tests: tiny training overrides, a process group of workers, CSV losses."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from seed_asr.testing.launch import run_local_group

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")
GLOBAL_LOSS = "+callbacks.global_loss._target_=seed_asr.callbacks.global_loss.GlobalLossLogger"
# Deterministic steps: no dropout, no SpecAugment (fixed data), SSL masks every frame with zero noise
# (the random span masks of one process and of two ranks cannot be drawn alike).
STAGE_OVERRIDES = {
    "ssl": ["stage.mask.mask_prob=1.0", "stage.mask.noise_std=0.0", "stage.quantizer.codebook_size=64"],
    "lm": [],
    "align": [],
    "sft": [],
}


def train_overrides(
    stage: str, shards: str, steps: int = 4, devices: int = 1, strategy: str = "auto"
) -> list[str]:
    """Overrides of a tiny deterministic run of ``stage`` on fixed batches (4 utterances per global batch)."""
    return [
        f"stage={stage}",
        "data=fixed",
        f"data.train_shards={shards}",
        "model=tiny",
        "model.encoder.dropout=0.0",
        "trainer=cpu",
        f"trainer.devices={devices}",
        f"strategy={strategy}",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=0",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_checkpoint.monitor=null",
        GLOBAL_LOSS,
        "stage.optimizer.lr=1e-2",
        "stage.scheduler.num_warmup_steps=1",
        *STAGE_OVERRIDES[stage],
    ]


def run_group(jobs: list[dict], folder: Path, world_size: int = 2, timeout: float = 900) -> dict:
    """Run ``jobs`` in a group of ``world_size`` worker processes; return rank 0's results.

    Raises:
        AssertionError: a rank failed (with the tail of its log).
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs, "result": str(folder / "result.json")}))
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    codes = run_local_group([sys.executable, str(WORKER), str(spec)], world_size, folder, env, timeout)
    if any(codes):
        tails = "\n".join(
            f"--- rank {r} ---\n{(folder / f'rank{r}.log').read_text()[-4000:]}" for r in range(world_size)
        )
        raise AssertionError(f"worker exit codes {codes}\n{tails}")
    return json.loads((folder / "result.json").read_text())


def csv_column(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """``(step, value)`` rows of ``column`` in a run's ``csv/metrics.csv`` (rows without it skipped)."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [(int(row["step"]), float(row[column])) for row in csv.DictReader(f) if row.get(column)]
