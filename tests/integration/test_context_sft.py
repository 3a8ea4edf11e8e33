"""Context SFT end to end on a tiny corpus of dialogues: sft -> context_sft (validation with context
and keyword recall) -> the context measurement grid (eval context modes, joint beam) -> transcribe
with hot words -> the copying measurement (where the hot word sits, attention on it, its loss)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dialogues import write_dialogue_corpus
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.config import CONF_DIR, compose_config
from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.data.contexts import check_fractions, keyword_occurs
from seed_asr.decoding.joint import JointConfig
from seed_asr.decoding.recognize import DecodingConfig
from seed_asr.demo.context import context_report_lines, measure_context
from seed_asr.demo.copying import locate, measure_copying, split_batches
from seed_asr.testing.synthetic import synthetic_wave
from seed_asr.text.prompts import PromptBuilder
from seed_asr.train import train
from seed_asr.transcribe import main as transcribe_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_dialogue_corpus(tmp_path_factory.mktemp("corpus"))


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
    relevant_cell = result["cells"]["context_sft/relevant/beam"]
    assert {"keyword_recall/heard", "keyword_recall/unheard"} & set(relevant_cell)  # split by training names

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


def test_copying_measurement_finds_the_entity_in_prompt_and_transcript(runs, corpus, tmp_path):
    """The positions the copying measurement reads hold the entity's keyword tokens (prompt) and the
    tokens predicted from its queries are the entity's transcript tokens; its figures are well formed."""
    loaded = load_speech_llm(runs["context_sft"])
    model = loaded.model
    context = {"history": "call Ilse now", "keywords": ["Vasquez", "Okonkwo", "Ilse"],
               "entities": ["Okonkwo"]}
    text, n_audio = "call Okonkwo now", 7
    samples, counts = locate(model, context, text, n_audio)
    assert counts == {"listed": 1, "survived": 1, "located": 1} and len(samples) == 1
    ids = model.prompt.build(context, text)
    row = [*ids.before_audio, *[model.tokenizer.pad_token_id] * n_audio, *ids.after_audio, *ids.target]
    decode = lambda positions: model.tokenizer.decode([row[p] for p in positions])  # noqa: E731
    assert decode(samples[0].match) == "Okonkwo"
    assert decode([q + 1 for q in samples[0].queries]) == "Okonkwo"
    assert decode(samples[0].others) == "VasquezIlse"
    tight = {**context, "keywords": ["Vasquez", "Ilse", "Okonkwo"]}
    model.prompt.max_context_tokens = len(model.prompt.encode("<|keywords|>Vasquez, Ilse"))
    assert locate(model, tight, text, n_audio)[1] == {"listed": 1, "survived": 0, "located": 0}

    model.prompt.max_context_tokens = 64
    result = measure_copying(loaded, split_batches(loaded, str(corpus), "val", tmp_path), max_utts=4)
    assert result["utterances"] == 4 and result["listed"] == 4 and result["survived_share"] == 1.0
    match = torch.tensor(result["attention_match"])
    assert match.shape == (2, 4) and ((match >= 0) & (match <= 1)).all()
    assert all(v > 0 for v in result["nll"].values())
