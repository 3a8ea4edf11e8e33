"""Checkpoints: exact resume (model, optimizer, scheduler, step), a SIGKILLed run resumed with
``ckpt_path=last``, atomic writes, and ``seed-asr export`` of plain and DeepSpeed checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dist_helpers import ROOT, csv_column, train_overrides
from safetensors.torch import load_file

from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.config import compose_config
from seed_asr.export import export_checkpoint
from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.train import train
from seed_asr.utils.atomic_checkpoint import AtomicCheckpointIO
from seed_asr.utils.checkpoints import load_state_from_checkpoint

# a schedule that does not depend on max_steps, so a run stopped early and resumed sees the same lrs
SCHEDULE = ["stage.scheduler.num_training_steps=8", "stage.scheduler.num_warmup_steps=2"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_synthetic_shards(tmp_path_factory.mktemp("ckpt") / "corpus", 1, 8, 0.5, 1.0)[0])


def test_resume_from_last_continues_exactly(shards: str, tmp_path: Path) -> None:
    """8 steps in one go == 4 steps, then a new process-like run resumed from last.ckpt to 8."""
    full, part = tmp_path / "full", tmp_path / "part"
    train(compose_config("train", train_overrides("lm", shards, steps=8) + SCHEDULE, full))
    train(compose_config("train", train_overrides("lm", shards, steps=4) + SCHEDULE, part))
    _, objects = train(
        compose_config("train", [*train_overrides("lm", shards, steps=8), *SCHEDULE, "ckpt_path=last"], part)
    )
    assert objects["trainer"].global_step == 8
    resumed = csv_column(part, "train/loss_global")
    assert [s for s, _ in resumed] == list(range(8)), "the CSV log continues in the same file"
    ref = csv_column(full, "train/loss_global")
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(ref), rtol=1e-5, atol=1e-6)
    lrs = csv_column(part, "lr-AdamW")
    torch.testing.assert_close(torch.tensor(lrs), torch.tensor(csv_column(full, "lr-AdamW")))


@pytest.mark.slow
def test_sigkilled_run_resumes_and_finishes_its_steps(shards: str, tmp_path: Path) -> None:
    run, steps = tmp_path / "run", 40
    args = [
        sys.executable,
        "-m",
        "seed_asr.train",
        *train_overrides("lm", shards, steps=steps),
        "callbacks.last_checkpoint.every_n_train_steps=4",
        f"hydra.run.dir={run}",
        "ckpt_path=last",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved_step = load_state_from_checkpoint(last)["global_step"]
    assert 0 < saved_step < steps
    resumed = run_process(args, timeout=600, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_state_from_checkpoint(last)["global_step"] == steps
    logged = [s for s, _ in csv_column(run, "train/loss_global")]
    assert logged[0] == 0 and logged[-1] == steps - 1, "rows of the killed run stay, the resumed run appends"
    assert set(range(saved_step, steps)) <= set(logged)


def test_failed_checkpoint_write_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def dies_half_way(obj: object, f: object) -> None:
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(torch.load(path, weights_only=True)["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left behind"


def test_export_of_a_lightning_checkpoint_loads_for_inference(shards: str, tmp_path: Path) -> None:
    run = tmp_path / "sft"
    train(compose_config("train", train_overrides("sft", shards, steps=2), run))
    out = export_checkpoint(run, tmp_path / "export", dtype="bfloat16", llm=True)
    state = load_state_from_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    exported = load_file(out / "model.safetensors")
    assert set(exported) == {k.removeprefix("model.") for k in state}
    for name, tensor in exported.items():
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor.float(), state[f"model.{name}"], rtol=1e-2, atol=1e-2)
    from_ckpt, from_export = load_speech_llm(run), load_speech_llm(out)
    assert from_ckpt.cfg.stage.name == from_export.cfg.stage.name == "sft"
    torch.testing.assert_close(from_export.features.cmvn.mean, from_ckpt.features.cmvn.mean)
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(out / "llm")
    torch.testing.assert_close(
        llm.get_input_embeddings().weight, from_export.model.llm.get_input_embeddings().weight.to(llm.dtype)
    )
