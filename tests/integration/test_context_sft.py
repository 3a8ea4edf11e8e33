"""Context SFT end to end on a tiny corpus of dialogues: sft -> context_sft (validation with context
and keyword recall) -> the context measurement grid (eval context modes, joint beam) -> transcribe
with hot words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from seed_asr.config import CONF_DIR, compose_config
from seed_asr.data.audio import SAMPLE_RATE, encode_flac
from seed_asr.data.contexts import check_fractions, keyword_occurs
from seed_asr.decoding.joint import JointConfig
from seed_asr.decoding.recognize import DecodingConfig
from seed_asr.demo.context import context_report_lines, measure_context
from seed_asr.testing.synthetic import synthetic_wave
from seed_asr.text.prompts import PromptBuilder
from seed_asr.train import train
from seed_asr.transcribe import main as transcribe_main

NAMES = ["Okonkwo", "Brandvold", "Anneliese", "Vasquez", "Ilse", "Tromso", "Marguerite", "Halvorsen"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_split(folder: Path, split: str, dialogues: int, seed: int) -> None:
    """Dialogues of 3 turns "call <name>" with history and hot words (entity + 2 distractors)."""
    rng = np.random.default_rng(seed)
    (folder / split).mkdir(parents=True)
    with wds.TarWriter(str(folder / split / "shard-000000.tar")) as writer:
        for d in range(dialogues):
            history = ""
            for turn in range(3):
                name, *others = rng.permutation(NAMES)[:3].tolist()
                text = f"call {name} now"
                seconds = float(rng.uniform(0.8, 1.5))
                record = {
                    "text": text,
                    "lang": "en",
                    "domain": "contacts",
                    "speaker": "tone",
                    "duration": seconds,
                    "dialogue": f"{split}{d}",
                    "context": {"history": history, "keywords": [name, *others], "entities": [name]},
                }
                wave = synthetic_wave(rng, seconds)
                writer.write(
                    {
                        "__key__": f"{split}{d}-{turn}",
                        "flac": encode_flac(wave, SAMPLE_RATE),
                        "json": json.dumps(record).encode(),
                    }
                )
                history = text


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for split, dialogues, seed in (("train", 8, 0), ("dev", 2, 1), ("test", 3, 2)):
        write_split(folder, split, dialogues, seed)
    return folder


def run_stage(stage: str, corpus: Path, run: Path, init_from: Path | None = None) -> dict[str, float]:
    overrides = [
        f"stage={stage}",
        "model=tiny",
        "trainer=cpu",
        "logger=csv",
        f"paths.corpus_dir={corpus}",
        "data.cmvn_path=null",
        "data.cmvn_utterances=8",
        "data.num_workers=0",
        "data.batches_per_epoch=2",
        "data.max_batch_seconds=8",
        "data.max_duration=4",
        "data.bucket_buffer=0",
        "trainer.max_steps=2",
        "callbacks.progress_bar=null",
        "model.max_new_tokens_margin=2",
        "model.max_tokens_per_second=8",
    ]
    if init_from is not None:
        overrides.append(f"stage.init_from={init_from}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    metrics, _ = train(cfg)
    return metrics


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    run_stage("sft", corpus, root / "sft")
    metrics = run_stage("context_sft", corpus, root / "context_sft", init_from=root / "sft")
    assert {"val/wer", "val/keyword_recall", "val/b_wer", "val/u_wer"} <= set(metrics)
    return {"sft": root / "sft", "context_sft": root / "context_sft", "root": root}


def test_context_sft_trains_from_sft_and_the_measurement_grid_runs(runs, corpus):
    out = runs["root"] / "measure"
    result = measure_context(
        out,
        corpus,
        runs["sft"],
        runs["context_sft"],
        beam_size=2,
        device="cpu",
        overrides=["data.num_workers=0"],
    )
    assert len(result["cells"]) == 8 and all(c["num_utts"] == 9 for c in result["cells"].values())
    lines = context_report_lines(result)
    assert sum(line.startswith("| context_sft |") for line in lines) == 5

    def prompts(cell: str) -> list[dict]:
        return [json.loads(line) for line in (out / cell / "hyps.jsonl").read_text().splitlines()]

    relevant, irrelevant = prompts("context_sft_relevant_beam"), prompts("context_sft_irrelevant_joint")
    assert all(any(keyword_occurs(k, r["ref"]) for k in r["prompt_keywords"]) for r in relevant)
    assert all(not any(keyword_occurs(k, r["ref"]) for k in r["prompt_keywords"]) for r in irrelevant)
    assert all(r["prompt_keywords"] == [] for r in prompts("sft_none_beam"))
    # finished cells are read back, not decoded again
    (out / "sft_none_beam" / "hyps.jsonl").unlink()
    again = measure_context(out, corpus, runs["sft"], runs["context_sft"], beam_size=2)
    assert again["cells"] == result["cells"]


def test_transcribe_puts_history_and_hot_words_into_the_prompt(runs, corpus, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, synthetic_wave(np.random.default_rng(5), 1.0), SAMPLE_RATE)
    seen = []
    build = PromptBuilder.build
    monkeypatch.setattr(PromptBuilder, "build", lambda self, c, t: seen.append(c) or build(self, c, t))
    argv = [
        str(wav),
        "--ckpt",
        str(runs["context_sft"]),
        "--keywords",
        "Okonkwo, Ilse",
        "--context",
        "hello",
        "--beam",
        "2",
        "--joint-alpha",
        "0.5",
        "--device",
        "cpu",
    ]
    transcribe_main(argv)
    printed = capsys.readouterr().out
    assert printed.startswith(f"{wav}\t") and printed.count("\n") == 1  # path, tab, transcript (may be empty)
    context = {"history": "hello", "keywords": ["Okonkwo", "Ilse"]}
    assert context in seen and None in seen  # joint beam search: with and without the context


def test_shipped_configs_build_the_context_stage_and_joint_decoding():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["stage=context_sft", "decoding=joint_beam"])
    assert check_fractions(cfg.stage.context_mix) and cfg.stage.val_use_context
    decoding = DecodingConfig(**cfg.decoding)
    assert decoding.method == "joint_beam" and decoding.joint == JointConfig(0.5, 8.0)


def test_eval_config_composes_inside_another_hydra_app(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # e.g. the demo's Hydra
        cfg = compose_config("eval", ["ckpt=x", "context_mode=irrelevant", "decoding=joint_beam"], tmp_path)
        assert GlobalHydra.instance().is_initialized()
        assert compose(config_name="train").stage.name == "sft"  # the outer app's Hydra still works
    assert cfg.context_mode == "irrelevant" and cfg.decoding.method == "joint_beam"
    assert cfg.paths.output_dir == str(tmp_path)
