"""The sbatch templates on a real local Slurm (2 CPU tasks, DDP), requeue on the pre-timeout signal,
a sweep through the submitit local launcher with the Optuna sweeper, and the cluster launcher config."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict
from slurm_cluster import LocalSlurm, slurm_cluster  # noqa: F401  (the session fixture)

from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import write_synthetic_shards

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ("train_single_node.sbatch", "train_multi_node.sbatch")
# the CPU variant of the templates: no GPUs, 2 tasks of 1 core on the one local node
CPU_JOB = ("--nodes=1", "--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1")
QUIET = ("callbacks.progress_bar=null", "+trainer.enable_progress_bar=false")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for split, shards in (("train", 2), ("dev", 1)):
        write_synthetic_shards(root / split, shards, 8, max_seconds=1.0, seed=len(split))
    return root


def job_env(out: Path) -> dict[str, str]:
    """What the templates read (slurm/srun_train.sh), for the CPU variant with this checkout's code."""
    return {"STAGE": "lm", "TRAINER": "cpu", "OUTPUT_ROOT": str(out), "PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def submit(cluster: LocalSlurm, out: Path, corpus: Path, *overrides: str) -> tuple[str, Path]:
    """Submit the single-node template for an LM run; returns the job id and its log file."""
    job = cluster.sbatch(
        *CPU_JOB, f"--output={out}/%x-%j.out", f"slurm/{TEMPLATES[0]}",
        f"paths.corpus_dir={corpus}", "data.batch_size=4", *QUIET, *overrides,
        env=job_env(out), cwd=ROOT,
    )
    return job, out / f"seed-asr-{job}.out"


def wait_for_line(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text() if log.exists() else ""
        if text in content:
            return
        assert "srun: error" not in content, content[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not in {log} after {timeout} s")


def global_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_accept_the_cpu_variant(slurm_cluster: LocalSlurm, template: str) -> None:  # noqa: F811
    result = slurm_cluster.command("sbatch", "--test-only", *CPU_JOB, f"{ROOT}/slurm/{template}")
    assert "to start at" in result.stderr, result.stderr


def test_two_task_ddp_job_finishes_with_a_checkpoint(
    slurm_cluster: LocalSlurm, corpus: Path, tmp_path: Path  # noqa: F811
) -> None:
    job, log = submit(slurm_cluster, tmp_path, corpus, "trainer.max_steps=4")
    info = slurm_cluster.wait(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=240)
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:] + slurm_cluster.log_tail()
    run = tmp_path / "lm" / f"slurm-{job}"
    assert global_step(run / "checkpoints" / "last.ckpt") == 4
    assert json.loads((run / "run_info.json").read_text())["world_size"] == 2


def test_pre_timeout_signal_checkpoints_requeues_and_resumes(
    slurm_cluster: LocalSlurm, corpus: Path, tmp_path: Path  # noqa: F811
) -> None:
    max_steps = 60
    job, log = submit(slurm_cluster, tmp_path, corpus, f"trainer.max_steps={max_steps}")
    wait_for_line(log, "SlurmRequeue: on SIGUSR1", timeout=240)
    slurm_cluster.command("scancel", "--signal=USR1", job)  # what --signal=USR1@90 sends to the tasks
    deadline = time.monotonic() + 60
    while slurm_cluster.job(job).get("Restarts") != "1":
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    # Slurm holds the requeued job for cred_expire (10 s here): an earlier start is refused by slurmd
    # (the old credential is revoked) and fails the job, so the test waits instead of forcing StartTime
    info = slurm_cluster.wait(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=240)
    text = log.read_text()  # the templates append: both runs are in the one log
    assert info["JobState"] == "COMPLETED", text[-3000:] + slurm_cluster.log_tail()
    assert f"job {job} restart 1" in text
    saved = [line for line in text.splitlines() if "SIGUSR1 received, saved" in line]
    assert saved, text[-3000:]
    step = int(saved[0].rsplit(" ", 1)[1])
    assert 0 < step < max_steps
    last = tmp_path / "lm" / f"slurm-{job}" / "checkpoints" / "last.ckpt"
    assert f"Restored all states from the checkpoint at {last}" in text
    assert global_step(last) == max_steps


def test_sweep_through_the_local_launcher_with_optuna(corpus: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "seed_asr.train", "-m", "stage=lm", "trainer=cpu",
           "hparams_search=sft_optuna", "hydra/launcher=local",
           "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
           "optimized_metric=val/loss", f"hydra.sweep.dir={sweep}", f"paths.corpus_dir={corpus}",
           "data.batch_size=4", "trainer.max_steps=4", *QUIET]  # 4 steps: one epoch, validated
    env = {**os.environ, **job_env(tmp_path)}
    result = run_process(cmd, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for trial in ("0", "1"):
        assert global_step(sweep / trial / "checkpoints" / "last.ckpt") == 4
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and best["best_value"] > 0
    assert set(best["best_params"]) == {"stage.optimizer.lr", "model.ctc_weight"}


def test_cluster_launcher_and_sweeper_configs_load() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = ["cluster=slurm", "hparams_search=sft_optuna", "hydra/launcher=slurm",
                     "hydra.launcher.partition=gpu"]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "run"
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.optimized_metric == "val/wer" and cfg.hydra.sweeper.direction == "minimize"
    assert instantiate(cfg.hydra.sweeper).sweeper.n_trials == cfg.hydra.sweeper.n_trials
    assert instantiate(cfg.callbacks.slurm_requeue).checkpoint_path == "run/checkpoints/last.ckpt"
    assert cfg.ckpt_path == "last" and cfg.trainer.plugins[0].auto_requeue is False
