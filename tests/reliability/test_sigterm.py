"""A training run stopped by SIGTERM (`kill`, a scheduler's preemption, `scancel`) saves its state at
the end of the running step, exits with 143 (128 + SIGTERM, so that no script takes it for a finished
run), and `ckpt_path=last` resumes from that step."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.utils.checkpoints import checkpoint_step, run_checkpoint
from tests.reliability.hostile import TRAIN

SAVE_EVERY = 3  # last.ckpt every 3 steps: the run is known to be training once it exists


def train_command(corpus: Path, run: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "seed_asr.train", *TRAIN, f"paths.corpus_dir={corpus}", f"hydra.run.dir={run}",
        "data.batches_per_epoch=100000", "trainer.val_check_interval=null",
        f"callbacks.last_checkpoint.every_n_train_steps={SAVE_EVERY}", *overrides,
    ]


@pytest.mark.timeout(600)
def test_sigterm_saves_the_running_step_exits_143_and_resumes(tmp_path: Path) -> None:
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    write_synthetic_shards(corpus / "train", 1, 8, 0.5, 1.0, seed=0)
    write_synthetic_shards(corpus / "dev", 1, 2, 0.5, 1.0, seed=1)
    last, log = run / "checkpoints" / "last.ckpt", tmp_path / "train.log"
    with log.open("w") as sink:  # a file, not a pipe nobody reads while the run trains
        proc = subprocess.Popen(train_command(corpus, run, "trainer.max_steps=100000"),
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.exists(), "no last.ckpt: " + log.read_text()[-3000:]
        time.sleep(1.0)  # some steps on
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    stopped_at = checkpoint_step(last)  # the step the run stopped at, not its last periodic save
    assert stopped_at >= SAVE_EVERY and f"stopped by SIGTERM at step {stopped_at}" in output, output[-3000:]

    resume = train_command(corpus, run, f"trainer.max_steps={stopped_at + 2}", "ckpt_path=last")
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert checkpoint_step(run_checkpoint(run)) == stopped_at + 2
