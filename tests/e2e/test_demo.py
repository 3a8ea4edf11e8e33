"""The README's main command, `seed-asr demo`, end to end with the tiny model and a few steps per run:
every training run, evaluation and measurement section ends up in the report, and a second invocation
resumes (finds everything done) instead of redoing it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

RUNS = ("ssl", "lm", "align", "sft", "context_sft", "rl", "rl_control")


def demo(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    steps = [f"runs.{run}.steps=3" for run in RUNS]
    cmd = [
        sys.executable,
        "-m",
        "seed_asr.demo",
        f"out_dir={out}",
        "train_overrides=['debug=tiny','trainer.val_check_interval=null']",
        *steps,
        "corpus.num_utterances=200",  # the demo's splits, held-out voices included
        "cmvn_utterances=64",
        "comparison.steps=3",
        "context.beam_size=2",
        "quant.settings=[w2_per_channel]",  # the tiny model's widths are no multiples of 64
        "quant.sft_settings=[w2_per_channel]",
        "quant.sft_steps=2",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_demo_writes_every_section_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = demo(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    for heading in (
        "## Runs",
        "## Test split",
        "## SFT from the SSL encoder vs a random encoder",
        "## RL (MWER",
        "## Context: context SFT and joint beam search",
        "## Quantization of `rl`",
        "## Voices held out of training",
        "## Targets",
    ):
        assert heading in report, heading
    timings = {t["run"]: t for t in json.loads((out / "report.json").read_text())["timings"]}
    assert {*RUNS, "sft_ssl_encoder", "sft_random_encoder"} <= timings.keys()
    heldout = json.loads((out / "report.json").read_text())["heldout"]["sft"]
    assert heldout["metrics"]["num_utts"] == json.loads((out / "corpus" / "stats.json").read_text())[
        "splits"]["heldout"]["utterances"] > 0
    assert all(timings[run]["steps"] == 3 for run in RUNS)
    # the quantization table has a row for every default method of the one setting, and the quant_sft row
    methods = [r["method"] for r in json.loads((out / "quant" / "quant_results.json").read_text())["runs"]]
    assert methods == ["rtn", "gptq", "decoupleq+bw", "decoupleq+bw+sft"]

    again = demo(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "seed_asr.train" not in again.stdout  # every run was found finished, none restarted


def test_the_context_profile_runs_its_copy_lm_before_context_sft(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = demo(out, "profile=context", "runs.copy_lm.steps=3", "quant.enabled=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    timings = {t["run"]: t for t in json.loads((out / "report.json").read_text())["timings"]}
    assert timings["copy_lm"]["stage"] == "lm" and timings["copy_lm"]["steps"] == 3
    assert timings["copy_lm"]["trained_steps"] <= 3  # stop_at_name_gain may end it at a validation
    order = list(timings)
    assert order.index("sft") < order.index("copy_lm") < order.index("context_sft")
    assert "## Context: context SFT and joint beam search" in (out / "report.md").read_text()
