"""The staged pipeline through its command-line doors, on a tiny corpus and the tiny model:
ssl -> lm -> align (encoder from ssl, LLM from lm) -> sft -> eval -> transcribe."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.timeout(900)


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def train(stage: str, corpus: Path, run_dir: Path, *extra: str) -> Path:
    run(
        "seed_asr.train",
        f"stage={stage}",
        "debug=tiny",
        f"paths.corpus_dir={corpus}",
        f"hydra.run.dir={run_dir}",
        "data.batch_size=8" if stage == "lm" else "data.max_batch_seconds=30",
        *extra,
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    return ckpt


def test_stages_chain_and_evaluate(tiny_corpus: Path, tmp_path: Path) -> None:
    ssl = train("ssl", tiny_corpus, tmp_path / "ssl", "stage.quantizer.codebook_size=256")
    lm = train("lm", tiny_corpus, tmp_path / "lm")
    align = train(
        "align",
        tiny_corpus,
        tmp_path / "align",
        f"stage.init_from=[{{path: {ssl}, include: ['^encoder\\.']}}, {{path: {lm}, include: ['^llm\\.']}}]",
    )
    # align froze the encoder and the LLM: their weights are exactly those of ssl and lm
    align_state = torch.load(align, weights_only=True)["state_dict"]
    ssl_state = torch.load(ssl, weights_only=True)["state_dict"]
    lm_state = torch.load(lm, weights_only=True)["state_dict"]
    name = next(k for k in ssl_state if k.startswith("model.encoder."))
    assert torch.equal(align_state[name], ssl_state[name])
    name = next(k for k in lm_state if k.startswith("model.llm."))
    assert torch.equal(align_state[name], lm_state[name])
    sft = train("sft", tiny_corpus, tmp_path / "sft", f"stage.init_from={align}")
    metrics = (tmp_path / "sft" / "csv" / "metrics.csv").read_text()
    assert "val/wer" in metrics and "train/loss" in metrics

    run(
        "seed_asr.eval",
        f"ckpt={sft}",
        f"paths.corpus_dir={tiny_corpus}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    hyps = (tmp_path / "eval" / "hyps.jsonl").read_text().splitlines()
    assert results["metrics"]["num_utts"] == len(hyps) > 0
    assert {"wer", "wer/en", "cer/zh"} <= results["metrics"].keys()

    audio = tmp_path / "utt.flac"
    first = json.loads(hyps[0])
    with tarfile.open(sorted((tiny_corpus / "test").glob("*.tar"))[0]) as tar:
        member = next(m for m in tar if m.name.endswith(".flac"))
        audio.write_bytes(tar.extractfile(member).read())
    out = run("seed_asr.transcribe", "--ckpt", str(sft), str(audio), "--keywords", "Okonkwo, Brandvold")
    assert out.splitlines()[-1].split("\t")[0] == str(audio)  # stdout ends with "<path>\t<text>"
    assert first["ref"]
