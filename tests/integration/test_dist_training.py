"""Every training stage under DDP, ZeRO-2 and ZeRO-3 on 2 CPU processes follows the loss curve of one
process on the same global batches (fixed in-memory batches: the streaming pipeline splits shards by
rank, so its batches cannot match a one-process run; see seed_asr/testing/fixed.py).

Also checked: ZeRO-3 partitions parameters at creation (inside ``configure_model``), ``init_from``
loads into partitioned parameters, DeepSpeed receives the trainer's gradient clipping, and bf16 with
gradient accumulation and activation checkpointing of encoder and LLM blocks runs under ZeRO.
One process group runs all jobs (~13 short fits) to pay the start-up and DeepSpeed's op build once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dist_helpers import csv_column, run_group, train_overrides
from safetensors.torch import load_file

from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.config import compose_config
from seed_asr.export import export_checkpoint
from seed_asr.strategies.cpu_deepspeed import CPUDeepSpeedStrategy
from seed_asr.strategies.zero import zero_checkpoint_world_size
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.testing.threads import torch_threads
from seed_asr.train import train
from seed_asr.utils.checkpoints import load_state_from_checkpoint

pytestmark = pytest.mark.distributed

STAGES = ("ssl", "lm", "align", "sft")
STRATEGIES = ("ddp", "deepspeed_stage_2", "deepspeed_stage_3")
BF16_ACCUM = ["trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2"]
CHECKPOINTING = ["model.encoder.activation_checkpointing=true", "model.llm_gradient_checkpointing=true"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Shards, starting checkpoints, and the one-process reference loss curves.

    The LLM stages start from checkpoints (``init_from``) so that every run has the same weights: under
    ZeRO-3 the LLM is initialised module by module on gathered partitions (seed_asr.models.llm), which
    draws other random numbers than a plain build. This also checks ``init_from`` into ZeRO-3 partitions.
    """
    with torch_threads(1):
        root = tmp_path_factory.mktemp("dist")
        shards = str(write_synthetic_shards(root / "corpus", 1, 8, 0.5, 1.0, seed=0)[0])
        for stage in ("lm", "sft"):
            train(compose_config("train", train_overrides(stage, shards, steps=2), root / f"init_{stage}"))
        extra = {
            "ssl": [],
            "lm": [f"stage.init_from={root / 'init_lm'}"],
            "align": [f"stage.init_from={root / 'init_sft'}"],
            "sft": [f"stage.init_from={root / 'init_sft'}"],
        }
        refs = {}
        for stage in STAGES:
            run = root / f"ref_{stage}"
            train(compose_config("train", train_overrides(stage, shards) + extra[stage], run))
            refs[stage] = csv_column(run, "train/loss_global")
        run = root / "ref_sft_bf16"
        train(compose_config("train", train_overrides("sft", shards) + extra["sft"] + BF16_ACCUM, run))
        refs["sft_bf16"] = csv_column(run, "train/loss_global")
        return {"root": root, "shards": shards, "refs": refs, "extra": extra}


@pytest.fixture(scope="module")
def dist(setup: dict) -> dict:
    """All 2-process jobs in one process group: {job name: (results, loss curve)}."""
    root, shards = setup["root"], setup["shards"]
    jobs = [
        {
            "name": f"{stage}-{strategy}",
            "overrides": train_overrides(stage, shards, devices=2, strategy=strategy) + setup["extra"][stage],
            "output_dir": str(root / f"{stage}-{strategy}"),
        }
        for stage in STAGES
        for strategy in STRATEGIES
    ]
    jobs += [
        {
            "name": f"sft_{variant}-{strategy}",
            "overrides": train_overrides("sft", shards, devices=2, strategy=strategy)
            + setup["extra"]["sft"]
            + options,
            "output_dir": str(root / f"sft_{variant}-{strategy}"),
        }
        for variant, strategy, options in (
            ("bf16", "deepspeed_stage_2", BF16_ACCUM),
            ("ckpt", "deepspeed_stage_3", CHECKPOINTING),
        )
    ]
    results = run_group(jobs, root / "group")
    return {
        job["name"]: (results[job["name"]], csv_column(Path(job["output_dir"]), "train/loss_global"))
        for job in jobs
    }


def _assert_same_curve(curve: list, ref: list, rtol: float) -> None:
    steps, values = zip(*curve, strict=True)
    ref_steps, ref_values = zip(*ref, strict=True)
    assert steps == ref_steps
    assert max(ref_values) - min(ref_values) > 0.05, "the reference loss barely moves: comparison is void"
    torch.testing.assert_close(torch.tensor(values), torch.tensor(ref_values), rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("stage", STAGES)
def test_two_ranks_follow_the_one_process_loss_curve(
    setup: dict, dist: dict, stage: str, strategy: str
) -> None:
    results, curve = dist[f"{stage}-{strategy}"]
    assert results["world_size"] == 2 and results["global_step"] == 4
    _assert_same_curve(curve, setup["refs"][stage], rtol=1e-4)


@pytest.mark.parametrize("stage", STAGES)
def test_zero3_partitions_parameters_at_creation(dist: dict, stage: str) -> None:
    ddp = dist[f"{stage}-ddp"][0]["param_counts"]
    zero3 = dist[f"{stage}-deepspeed_stage_3"][0]["param_counts"]
    assert zero3["total"] == ddp["total"] and zero3["trainable"] == ddp["trainable"]
    assert ddp["local"] == ddp["total"]
    # each rank holds its half (DeepSpeed pads every partition to an even split)
    assert ddp["total"] / 2 <= zero3["local"] < 0.6 * ddp["total"]


def test_deepspeed_gets_gradient_clipping_and_accumulation(dist: dict) -> None:
    config = dist["sft_bf16-deepspeed_stage_2"][0]["deepspeed_config"]
    assert config["gradient_clipping"] == 1.0
    assert config["gradient_accumulation_steps"] == 2
    assert config["bf16"]["enabled"] is True


def test_bf16_with_accumulation_under_zero2_tracks_one_process(setup: dict, dist: dict) -> None:
    results, curve = dist["sft_bf16-deepspeed_stage_2"]
    assert results["global_step"] == 4
    # DeepSpeed keeps bf16 weights (fp32 master copy) where one-process autocast keeps fp32 weights
    _assert_same_curve(curve, setup["refs"]["sft_bf16"], rtol=3e-2)


def test_activation_checkpointing_under_zero3_leaves_the_loss_curve_unchanged(
    setup: dict, dist: dict
) -> None:
    _, curve = dist["sft_ckpt-deepspeed_stage_3"]
    _assert_same_curve(curve, setup["refs"]["sft"], rtol=1e-4)


def test_export_of_zero3_checkpoint_matches_ddp_weights(dist: dict, setup: dict, tmp_path: Path) -> None:
    """A 2-rank ZeRO-3 folder consolidates to the weights DDP reached on the same batches."""
    root = setup["root"]
    zero3 = export_checkpoint(root / "sft-deepspeed_stage_3", tmp_path / "zero3")
    ddp = load_state_from_checkpoint(root / "sft-ddp")["state_dict"]
    exported = load_file(zero3 / "model.safetensors")
    assert set(exported) == {k.removeprefix("model.") for k in ddp}
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, ddp[f"model.{name}"], rtol=1e-3, atol=1e-4)
    assert load_speech_llm(zero3).cfg.stage.name == "sft"


def test_resuming_zero_states_on_another_world_size_fails_clearly(dist: dict, setup: dict) -> None:
    folder = setup["root"] / "sft-deepspeed_stage_2" / "checkpoints" / "last.ckpt"
    assert zero_checkpoint_world_size(folder) == 2
    with pytest.raises(ValueError, match="partitioned over 2 ranks, but this run has 1.*seed-asr export"):
        CPUDeepSpeedStrategy(stage=2).load_checkpoint(folder)
