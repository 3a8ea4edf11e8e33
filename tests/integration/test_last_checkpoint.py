"""A run folder's checkpoints: ``last.ckpt`` is the state after the final step (also when the last
validation did not improve the monitored metric, and when training ends between validations),
``best.ckpt`` the validation with the best metric; ``init_from`` and ``seed-asr eval`` take the one their
config names. The metric is scripted by a callback so that it worsens deterministically."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pytest
import torch

from seed_asr.config import compose_config
from seed_asr.eval import evaluate
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.train import build_module, train
from seed_asr.utils.checkpoints import load_state_from_checkpoint, run_checkpoint

SCORE = "val/scripted"
DATA = ["data.cmvn_path=null", "data.max_batch_seconds=10", "data.max_duration=5", "data.num_workers=0"]


class ScriptedScore(L.Callback):
    """Logs ``scores[i]`` as ``val/scripted`` at the i-th validation and keeps the weights it scored."""

    def __init__(self, scores: Sequence[float]) -> None:
        self.scores = list(scores)
        self.weights: dict[int, dict[str, torch.Tensor]] = {}  # global step -> state dict

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log(SCORE, self.scores[len(self.weights)])
        self.weights[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}


pytestmark = pytest.mark.usefixtures("one_thread")

Run = tuple[Path, L.Trainer, ScriptedScore]  # run folder, trainer after fit, its ScriptedScore


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_synthetic_shards(root / "train", 1, 8, 0.5, 1.0, seed=0)
    write_synthetic_shards(root / "dev", 1, 2, 0.5, 1.0, seed=1)
    write_synthetic_shards(root / "test", 1, 2, 0.5, 1.0, seed=2)
    return root


def fit(corpus: Path, run: Path, scores: Sequence[float], *overrides: str) -> tuple[L.Trainer, ScriptedScore]:
    """Train the tiny SFT model in ``run`` with ``val/scripted`` (lower is better) as the monitored metric."""
    cfg = compose_config(
        "train",
        [
            "stage=sft",
            "model=tiny",
            "trainer=cpu",
            f"paths.corpus_dir={corpus}",
            *DATA,
            "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1",
            "+trainer.enable_model_summary=false",
            "callbacks.progress_bar=null",
            f"callbacks.model_checkpoint.monitor={SCORE}",
            "callbacks.model_checkpoint.mode=min",
            f"+callbacks.scripted._target_={__name__}.ScriptedScore",
            f"+callbacks.scripted.scores={list(scores)}",
            "stage.scheduler.num_warmup_steps=1",
            *overrides,
        ],
        run,
    )
    _, objects = train(cfg)
    trainer = objects["trainer"]
    return trainer, next(c for c in trainer.callbacks if isinstance(c, ScriptedScore))


def check_last_and_best(run: Path, trainer: L.Trainer, scripted: ScriptedScore, best: int) -> None:
    """last.ckpt: final step, weights, optimizer and scheduler; best.ckpt: the weights at step ``best``."""
    last = load_state_from_checkpoint(run, "last")
    assert last["global_step"] == trainer.global_step
    final = trainer.lightning_module.state_dict()
    assert last["state_dict"].keys() == final.keys()
    for name, tensor in final.items():
        torch.testing.assert_close(last["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
    # optimizer, scheduler and best-score states of the final step, for `ckpt_path=last`
    assert last["lr_schedulers"][0]["last_epoch"] == trainer.global_step
    assert {int(s["step"]) for s in last["optimizer_states"][0]["state"].values()} == {trainer.global_step}
    tracked = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert Path(tracked["best_model_path"]) == run_checkpoint(run, "best")
    assert float(tracked["best_model_score"]) == min(scripted.scores)
    kept = load_state_from_checkpoint(run, "best")
    assert kept["global_step"] == best
    assert any(not torch.equal(kept["state_dict"][name], tensor) for name, tensor in final.items())
    for name, tensor in scripted.weights[best].items():
        torch.testing.assert_close(kept["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.fixture(scope="module")
def worse_at_the_end(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Validations at steps 2 and 4, the second one worse; training ends at step 4."""
    run = tmp_path_factory.mktemp("worse") / "run"
    trainer, scripted = fit(corpus, run, [1.0, 2.0], "trainer.max_steps=4", "trainer.val_check_interval=2",
                            "data.batches_per_epoch=4")
    return run, trainer, scripted


def test_last_is_the_final_state_when_the_last_validation_is_worse(worse_at_the_end: Run) -> None:
    run, trainer, scripted = worse_at_the_end
    assert sorted(scripted.weights) == [2, 4] and trainer.global_step == 4
    check_last_and_best(run, trainer, scripted, best=2)


def test_last_is_the_final_state_when_training_ends_between_validations(corpus: Path, tmp_path: Path) -> None:
    """Validation once per 2-batch epoch (steps 2 and 4, the second worse); max_steps=5 ends mid-epoch;
    the run then resumes from last.ckpt to step 6."""
    run, epoch = tmp_path / "run", "data.batches_per_epoch=2"
    trainer, scripted = fit(corpus, run, [1.0, 2.0], "trainer.max_steps=5", epoch)
    assert sorted(scripted.weights) == [2, 4] and trainer.global_step == 5
    check_last_and_best(run, trainer, scripted, best=2)
    resumed, _ = fit(corpus, run, [1.0, 2.0], "trainer.max_steps=6", epoch, "ckpt_path=last")
    assert resumed.global_step == 6 and load_state_from_checkpoint(run)["global_step"] == 6


def test_config_writes_the_files_run_checkpoint_reads(tmp_path: Path) -> None:
    callbacks = compose_config("train", [], tmp_path).callbacks
    assert Path(callbacks.last_checkpoint.path) == run_checkpoint(tmp_path, "last")
    best = Path(callbacks.model_checkpoint.dirpath) / f"{callbacks.model_checkpoint.filename}.ckpt"
    assert best == run_checkpoint(tmp_path, "best")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "last"),  # the stage's default (conf/stage/align.yaml)
        (["stage.init_checkpoint=best"], "best"),
        (["stage.init_from=[{path: RUN, checkpoint: best}]"], "best"),  # an entry's own choice
    ],
)
def test_init_from_takes_the_configured_checkpoint(
    worse_at_the_end: Run, corpus: Path, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    run = worse_at_the_end[0]
    cfg = compose_config(
        "train",
        ["stage=sft", "model=tiny", f"paths.corpus_dir={corpus}", *DATA, f"stage.init_from={run}",
         *(o.replace("RUN", str(run)) for o in overrides)],
        tmp_path,
    )
    module = build_module(cfg)
    module.configure_model()
    source = load_state_from_checkpoint(run_checkpoint(run, expected))["state_dict"]
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("overrides", "expected"), [([], "last"), (["checkpoint=best"], "best")])
def test_eval_takes_the_configured_checkpoint(
    worse_at_the_end: Run, corpus: Path, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    run = worse_at_the_end[0]
    overrides = [f"ckpt={run}", f"paths.corpus_dir={corpus}", "device=cpu", *DATA, *overrides]
    assert evaluate(compose_config("eval", overrides, tmp_path))["num_utts"] == 2
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["checkpoint"] == str(run_checkpoint(run, expected))
