"""decoupleQ around training: `seed-asr quantize` + eval of its folder, stage quant_sft (float parts only),
bad quant configs failing before training, and the callback in a 2-process DDP run."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from safetensors.torch import load_file

from seed_asr.artifacts.quantized import WEIGHTS, read_report
from seed_asr.artifacts.serialization import tokenizer_to_files
from seed_asr.eval import evaluate
from seed_asr.quant.spec import QuantSpec
from seed_asr.quantize import quantize
from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.train import build, train
from seed_asr.utils.checkpoints import CMVN_KEY, TOKENIZER_KEY
from tests.unit.models_helpers import tiny_speech_llm  # noqa: F401
from tests.unit.test_quant_speech_llm import MODEL_CFG

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# tiny runs: short utterances, small batches, no workers, no progress bar
DATA = ["data.cmvn_path=null", "data.max_batch_seconds=10", "data.max_duration=5", "data.num_workers=0"]
TRAIN = ["trainer=cpu", "trainer.max_steps=2", "data.batches_per_epoch=2", "callbacks.progress_bar=null",
         "+trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", *DATA]
FAST_QUANT = ["quant.calib_batches=1", "quant.config.max_iter=1", "quant.config.epochs=1"]

pytestmark = pytest.mark.usefixtures("one_thread")


def compose_cfg(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_synthetic_shards(root / "train", 2, 6, 0.5, 1.5, seed=0)
    write_synthetic_shards(root / "dev", 1, 4, 0.5, 1.0, seed=1)
    write_synthetic_shards(root / "test", 1, 3, 0.5, 1.0, seed=2)
    return root


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained stage checkpoint of the tiny model (random weights)."""
    torch.manual_seed(0)
    model = tiny_speech_llm()
    path = tmp_path_factory.mktemp("float") / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"cfg": {"model": {**MODEL_CFG, "tokenizer": {"path": None}}}},
                TOKENIZER_KEY: tokenizer_to_files(model.tokenizer),
                CMVN_KEY: {"mean": [0.0] * 80, "std": [4.0] * 80}}, path)
    return path


@pytest.fixture(scope="module")
def quantized(corpus: Path, float_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantized")
    cfg = compose_cfg("quantize", [f"ckpt={float_ckpt}", f"paths.corpus_dir={corpus}", "quant=w3g64",
                                   "quant.config.group_size=32", "method=gptq", *FAST_QUANT, *DATA], out)
    quantize(cfg)
    return out


@pytest.mark.parametrize(("name", "bits", "group_size"),
                         [("w2g64", 2, 64), ("w3g64", 3, 64), ("w4g64", 4, 64), ("w2_per_channel", 2, -1)])
def test_every_quant_config_composes_into_a_valid_spec(name: str, bits: int, group_size: int,
                                                       tmp_path: Path) -> None:
    assert {p.stem for p in (CONF / "quant").glob("*.yaml")} == {"w2g64", "w3g64", "w4g64", "w2_per_channel"}
    spec = QuantSpec.from_cfg(compose_cfg("quantize", [f"quant={name}", "ckpt=x"], tmp_path).quant)
    assert (spec.name, spec.config.bits, spec.config.group_size) == (name, bits, group_size)
    assert spec.parts == ("encoder", "converter", "llm") and spec.config.method == "decoupleq"


def test_quantize_writes_report_and_folder_that_eval_loads(quantized: Path, corpus: Path,
                                                            tmp_path: Path) -> None:
    report = read_report(quantized)
    assert report["config"]["method"] == "gptq" and report["config"]["bits"] == 3
    assert any(k.startswith("llm.") for k in report["layers"]) and report["seconds"] > 0
    assert report["size"]["quantized_bytes"] == (quantized / WEIGHTS).stat().st_size
    assert report["size"]["quantized_bytes"] < report["size"]["fp16_bytes"]
    overrides = [f"ckpt={quantized}", f"paths.corpus_dir={corpus}", "device=cpu", *DATA]
    cfg = compose_cfg("eval", overrides, tmp_path)
    metrics = evaluate(cfg)
    assert metrics["num_utts"] == 3 and (tmp_path / "hyps.jsonl").read_text().count("\n") == 3


def test_quant_sft_trains_float_parts_only(quantized: Path, corpus: Path, tmp_path: Path) -> None:
    overrides = ["stage=quant_sft", f"stage.quantized={quantized}", f"paths.corpus_dir={corpus}",
                 "stage.optimizer.lr=0.01", "stage.scheduler.num_warmup_steps=0", *TRAIN]
    train(compose_cfg("train", overrides, tmp_path))
    before, after = load_file(quantized / WEIGHTS), load_file(tmp_path / "quantized" / WEIGHTS)
    assert before.keys() == after.keys()
    packed = [k for k in before if k.endswith(".packed")]
    assert packed and all(torch.equal(before[k], after[k]) for k in packed)
    scales = [k for k in before if k.endswith((".scale", ".zero"))]
    assert any(not torch.equal(before[k], after[k]) for k in scales)
    frozen = [k for k in before if k.endswith("embed_tokens.weight") or k.startswith("encoder.subsample")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_bad_quant_config_fails_before_training(corpus: Path, tmp_path: Path) -> None:
    common = [f"paths.corpus_dir={corpus}", "callbacks=decoupleq", *TRAIN]
    with pytest.raises(Exception, match="bits"):
        build(compose_cfg("train", [*common, "quant.config.bits=5"], tmp_path / "a"))
    objects = build(compose_cfg("train", [*common, "quant.config.group_size=48"], tmp_path / "b"))
    with pytest.raises(ValueError, match="group_size 48 does not divide"):
        objects["trainer"].fit(objects["module"], datamodule=objects["datamodule"])
    assert objects["trainer"].global_step == 0


@pytest.mark.distributed
def test_callback_in_ddp_logs_both_wers_and_its_checkpoint_gives_the_same_wer(corpus: Path,
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "seed_asr.train", "stage=sft", f"paths.corpus_dir={corpus}",
           f"hydra.run.dir={run}", "trainer.devices=2", "strategy=ddp", "callbacks=decoupleq",
           "model.llm.intermediate_size=192", *TRAIN, *FAST_QUANT]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = run_process(cmd, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    logged = {k: float(v) for row in rows for k, v in row.items() if v}
    assert "val/wer" in logged and "val_w2g64/wer" in logged and "quant_w2g64/mean_error" in logged
    assert any(k.startswith("quant_w2g64/error/llm.") for k in logged)
    overrides = [f"ckpt={run / 'quantized' / 'w2g64'}", f"paths.corpus_dir={corpus}", "split=val",
                 "device=cpu",
                 *DATA]
    cfg = compose_cfg("eval", overrides, tmp_path / "eval")
    assert evaluate(cfg)["wer"] == pytest.approx(logged["val_w2g64/wer"], abs=1e-6)
