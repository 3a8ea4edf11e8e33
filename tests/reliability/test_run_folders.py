"""Run folders: one live run owns a folder (a second one is refused; a killed one leaves it free), default
folder names of two launches differ, a resume keeps the folder's config record and appends its own, and
``ckpt_path=last`` resumes from the newest readable checkpoint, naming and counting those it passes over."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra.core.utils
import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from seed_asr.config import CONF_DIR, compose_config
from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.train import resolve_ckpt_path, train
from seed_asr.utils.checkpoints import load_state_from_checkpoint

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


class StartStep(L.Callback):
    """Records the global step training starts from (after a resume: the checkpoint's)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = trainer.global_step


class SecondRun(L.Callback):
    """At the first training step, runs a second training in the same run folder (another process)."""

    def __init__(self, command: list[str]) -> None:
        self.command = list(command)
        self.result: subprocess.CompletedProcess | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.result is None:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            self.result = run_process(self.command, timeout=600, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_synthetic_shards(root / "train", 1, 8, 0.5, 1.0, seed=0)
    write_synthetic_shards(root / "dev", 1, 2, 0.5, 1.0, seed=1)
    return root


def overrides(corpus: Path, steps: int, *extra: str, stage: str = "sft") -> list[str]:
    """A tiny run of ``stage`` for ``steps`` steps (2 per epoch, validation at the end of each epoch)."""
    return [
        f"stage={stage}", "model=tiny", "trainer=cpu", f"paths.corpus_dir={corpus}", "data.cmvn_path=null",
        "data.max_batch_seconds=10", "data.max_duration=5", "data.num_workers=0", "data.batches_per_epoch=2",
        f"trainer.max_steps={steps}", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
        "+trainer.enable_model_summary=false", "callbacks.progress_bar=null",
        "stage.scheduler.num_warmup_steps=1", *extra,
    ]


def fit(corpus: Path, run: Path, steps: int, *extra: str) -> L.Trainer:
    _, objects = train(compose_config("train", overrides(corpus, steps, *extra), run))
    return objects["trainer"]


def callback(trainer: L.Trainer, kind: type[L.Callback]) -> Any:
    return next(c for c in trainer.callbacks if isinstance(c, kind))


def logged_steps(run: Path) -> Counter[int]:
    """How often each step has a train/loss row in the run's metrics.csv."""
    with (run / "csv" / "metrics.csv").open() as f:
        return Counter(int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss"))


def starts(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "starts.jsonl").read_text().splitlines()]


# --- one live run per folder ---------------------------------------------------------------------------

def test_a_second_run_in_a_live_run_folder_is_refused_and_mixes_nothing(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    second = [sys.executable, "-m", "seed_asr.train", *overrides(corpus, 4, "seed=7"), f"hydra.run.dir={run}"]
    trainer = fit(corpus, run, 4, f"+callbacks.second._target_={__name__}.SecondRun",
                  f"+callbacks.second.command={json.dumps(second)}")
    result = callback(trainer, SecondRun).result
    assert result is not None and result.returncode != 0, "the second run was not refused"
    assert f"run folder {run} is in use by pid {os.getpid()}" in result.stderr
    # the folder holds the first run only: its config, its steps once each, its checkpoints
    assert OmegaConf.load(run / "config.yaml").seed == 1234
    assert [s["config"]["seed"] for s in starts(run)] == [1234]
    assert logged_steps(run) == Counter(range(4))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert load_state_from_checkpoint(run)["global_step"] == trainer.global_step == 4


def test_a_killed_run_leaves_its_folder_free(corpus: Path, tmp_path: Path) -> None:
    """A run that dies holding its folder (SIGKILL: no clean-up runs) does not lock it for the next."""
    run = tmp_path / "run"
    holds_then_dies = (
        "import os, signal, sys; from seed_asr.utils.run_folder import hold_run_folder\n"
        "with hold_run_folder(sys.argv[1]): os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", holds_then_dies, str(run)], cwd=ROOT, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert fit(corpus, run, 2, "ckpt_path=last").global_step == 2


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """Hydra's ``now`` resolver reads the instants of the returned list, one per launch."""
    instants: list[datetime] = []

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # noqa: ARG003 - datetime's signature
            return instants[0]

    monkeypatch.setattr(hydra.core.utils, "datetime", Clock)
    return instants


@pytest.mark.parametrize("config", ["train", "eval", "quantize"])
def test_default_run_folders_of_two_launches_in_one_second_differ(
    frozen_clock: list[datetime], config: str
) -> None:
    def launch(instant: datetime) -> tuple[str, str]:
        frozen_clock[:] = [instant]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            hydra_cfg = compose(config, return_hydra_config=True).hydra
        return hydra_cfg.run.dir, hydra_cfg.sweep.dir

    GlobalHydra.instance().clear()
    first = launch(datetime(2026, 12, 7, 10, 0, 0, 100_000))
    second = launch(datetime(2026, 12, 7, 10, 0, 0, 900_000))
    GlobalHydra.instance().clear()
    assert first[0] != second[0] and first[1] != second[1]


# --- the config record ---------------------------------------------------------------------------------

def test_a_failed_resume_with_another_stage_keeps_the_config_and_appends_its_record(
    corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    fit(corpus, run, 2)
    original = (run / "config.yaml").read_text()
    with pytest.raises(Exception):  # noqa: B017 - whatever the SSL module says about SFT weights
        train(compose_config("train", overrides(corpus, 4, "ckpt_path=last", stage="ssl"), run))
    assert (run / "config.yaml").read_text() == original
    records = starts(run)
    assert [r["config"]["stage"]["name"] for r in records] == ["sft", "ssl"]
    assert records[0]["resumed_from"] is None
    assert records[1]["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert fit(corpus, run, 4, "ckpt_path=last").global_step == 4  # the folder still resumes
    assert (run / "config.yaml").read_text() == original and len(starts(run)) == 3


# --- ckpt_path=last: the newest readable checkpoint ------------------------------------------------------

STEP_CHECKPOINTS = [  # a checkpoint every 2 steps, kept: step-2.ckpt, step-4.ckpt
    "+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.steps.dirpath=${paths.output_dir}/checkpoints", "+callbacks.steps.filename='step-{step}'",
    "+callbacks.steps.auto_insert_metric_name=false", "+callbacks.steps.every_n_train_steps=2",
    "+callbacks.steps.save_top_k=-1",
]


@pytest.fixture(scope="module")
def four_steps(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("four") / "run"
    fit(corpus, run, 4, *STEP_CHECKPOINTS)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "step-2.ckpt", "step-4.ckpt"]
    return run


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_resume_without_a_readable_last_takes_the_newest_readable_checkpoint(
    four_steps: Path, corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(four_steps, run)
    last = run / "checkpoints" / "last.ckpt"
    last.unlink() if damage == "missing" else truncate(last)
    truncate(run / "checkpoints" / "best.ckpt")
    with caplog.at_level(logging.WARNING, logger="seed_asr"):
        trainer = fit(corpus, run, 6, "ckpt_path=last", f"+callbacks.start._target_={__name__}.StartStep")
    assert callback(trainer, StartStep).step == 4 and trainer.global_step == 6
    said = caplog.text
    assert f"resuming from {run / 'checkpoints' / 'step-4.ckpt'} (global step 4)" in said
    assert f"{last} {'is missing' if damage == 'missing' else 'does not load'}" in said
    unreadable = ["best.ckpt"] + (["last.ckpt"] if damage == "truncated" else [])
    assert f"{len(unreadable)} unreadable passed over" in said and all(n in said for n in unreadable)
    assert logged_steps(run) == Counter(range(6)), "the rows of steps 0-3 stay, 4 and 5 are appended"


def save(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(64)}}, path)
    return path


def test_ckpt_path_last_picks_the_highest_step_and_names_every_unreadable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpts = tmp_path / "checkpoints"
    save(ckpts / "step-10.ckpt", 10)
    newest = save(ckpts / "step-30.ckpt", 30)
    save(ckpts / "best.ckpt", 20)
    for name in ("last.ckpt", "step-40.ckpt"):
        truncate(save(ckpts / name, 40))
    (ckpts / "step-50.ckpt").write_text("not a checkpoint")
    (ckpts / ".last.ckpt.tmp-123").write_bytes(b"")  # an interrupted atomic write: not a checkpoint
    with caplog.at_level(logging.WARNING, logger="seed_asr"):
        assert resolve_ckpt_path("last", tmp_path) == str(newest)
    assert "3 unreadable passed over" in caplog.text
    assert all(name in caplog.text for name in ("last.ckpt", "step-40.ckpt", "step-50.ckpt"))
    assert ".tmp-" not in caplog.text


def test_ckpt_path_last_starts_fresh_without_checkpoints_and_stops_when_none_loads(tmp_path: Path) -> None:
    assert resolve_ckpt_path("last", tmp_path) is None
    assert resolve_ckpt_path("last", tmp_path / "never-created") is None
    truncate(save(tmp_path / "checkpoints" / "last.ckpt", 4))
    (tmp_path / "checkpoints" / "best.ckpt").write_text("")
    with pytest.raises(ValueError, match=r"none of the 2 checkpoints .* loads.*best.ckpt.*last.ckpt"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path("runs/x/last.ckpt", tmp_path) == "runs/x/last.ckpt"
