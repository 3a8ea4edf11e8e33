"""A demo folder keeps the settings its results were made with: resuming with the same settings (from any
path) goes on, other settings fail before any work, naming each difference."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from seed_asr.demo.pipeline import run_demo
from seed_asr.demo.settings import SETTINGS_FILE, SettingsChanged, hold_settings

CONF = Path(__file__).resolve().parents[2] / "conf"


def demo_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("demo", overrides=list(overrides))


def test_the_same_settings_resume_from_any_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    hold_settings(out, demo_config(f"out_dir={out}"))
    recorded = (out / SETTINGS_FILE).read_text()
    assert "num_utterances: 30000" in recorded and "out_dir" not in recorded
    hold_settings(out, demo_config("out_dir=elsewhere/demo"))  # a moved folder: no error
    assert (out / SETTINGS_FILE).read_text() == recorded


def test_other_settings_fail_before_any_work_and_name_each_difference(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    hold_settings(out, demo_config())
    changed = demo_config(f"out_dir={out}", "runs.sft.steps=3000", "profile=context")
    with pytest.raises(SettingsChanged) as failure:
        run_demo(changed)
    message = str(failure.value)
    assert "runs.sft.steps: 1500 -> 3000" in message
    assert "runs.copy_lm.stage: (unset) -> lm" in message  # a run the profile adds
    assert "runs.context_sft.steps: 150 -> 900" in message
    assert "corpus" not in message.split("\n", 1)[1]  # unchanged settings are not listed
    assert sorted(p.name for p in out.iterdir()) == [SETTINGS_FILE]  # no corpus, no run, no timings
