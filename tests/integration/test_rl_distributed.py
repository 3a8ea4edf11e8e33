"""The RL stage through the Hydra entry point with 2 CPU processes: DDP and DeepSpeed ZeRO-2.

Beam search / sampling runs inside each rank's training step without collectives; a run that
deadlocked or skipped a step on one rank would hang (caught by the timeout) or crash.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seed_asr.data.cmvn import compute_cmvn, save_cmvn
from seed_asr.data.datamodule import ShardDataModule
from seed_asr.data.features import Fbank
from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import write_synthetic_shards

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rl_corpus")
    train = write_synthetic_shards(root / "train", 2, 8, 0.5, 1.2, seed=0)
    write_synthetic_shards(root / "dev", 2, 2, 0.5, 1.2, seed=1, prefix="dev")
    waves = ShardDataModule(train_shards=[str(p) for p in train]).plain_waves([str(p) for p in train])
    save_cmvn(compute_cmvn(waves, Fbank(), 8), root / "cmvn.json")
    return root


def run_rl(corpus: Path, run: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "seed_asr.train", "stage=rl", "trainer=cpu", "trainer.devices=2",
        f"paths.corpus_dir={corpus}", f"data.cmvn_path={corpus / 'cmvn.json'}", "data.num_workers=1",
        f"data.batches_per_epoch={STEPS}", "data.max_batch_seconds=4", "data.max_duration=2",
        "data.bucket_buffer=0", f"data.val_shards={corpus}/dev/*.tar",
        f"trainer.max_steps={STEPS}", "trainer.num_sanity_val_steps=0", "callbacks.progress_bar=null",
        "trainer.log_every_n_steps=1", f"hydra.run.dir={run}", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return run_process(cmd, timeout=300, env=env, cwd=ROOT)


def logged(run: Path, key: str) -> list[float]:
    rows = [row for path in run.rglob("metrics.csv") for row in csv.DictReader(path.open())]
    return [float(row[key]) for row in rows if row.get(key)]


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("ddp", []),
        (
            "deepspeed_stage_2",
            # the dynamic-batch loader has no batch_size for Lightning to read
            ["stage.rl.nbest_source=sampling", "stage.rl.nbest=3", "+strategy.logging_batch_size_per_gpu=1"],
        ),
    ],
)
def test_rl_runs_in_step_on_two_ranks(corpus, tmp_path, strategy, extra):
    run = tmp_path / strategy
    result = run_rl(corpus, run, f"strategy={strategy}", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(logged(run, "train/mwer_loss")) == STEPS  # rank 0 logs every step
    assert logged(run, "train/nbest_size") and all(1 <= n <= 4 for n in logged(run, "train/nbest_size"))
    assert logged(run, "val/wer")  # validation decoded and gathered over both ranks
    assert (run / "checkpoints" / "last.ckpt").exists()
