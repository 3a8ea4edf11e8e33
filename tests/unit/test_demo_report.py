"""The demo report's learning curve and target lines, and the demo's up-front config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from seed_asr.demo.context import TARGET_CELLS, measurement_cells
from seed_asr.demo.pipeline import run_demo, run_order
from seed_asr.demo.report import (
    copy_lines,
    curve_lines,
    heldout_lines,
    learning_curve,
    report_steps,
    target_lines,
    train_count_lines,
)
from seed_asr.demo.runs import init_from_overrides

CONF = Path(__file__).resolve().parents[2] / "conf"


def write_metrics(run_dir: Path, text: str) -> None:
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text(text)


def test_learning_curve_pairs_each_validation_with_its_minutes(tmp_path: Path) -> None:
    write_metrics(tmp_path / "sft", (
        "epoch,step,train/loss,time/elapsed_min,val/wer/en,val/cer/zh,val/loss,val/loss_other_audio\n"
        "0,9,3.0,0.5,,,,\n"
        "0,299,,4.25,0.9,,1.4,1.5\n"
        "0,299,1.2,,,,,\n"
        "1,599,,8.5,0.25,0.5,0.8,1.6\n"
    ))
    curve = learning_curve(tmp_path / "sft")
    assert curve == [
        {"step": 299, "val/wer/en": 0.9, "val/loss": 1.4, "val/loss_other_audio": 1.5, "minutes": 4.25},
        {"step": 599, "val/wer/en": 0.25, "val/cer/zh": 0.5, "val/loss": 0.8, "val/loss_other_audio": 1.6,
         "minutes": 8.5},
    ]
    lines = curve_lines(tmp_path, "sft")
    assert lines[-2:] == [
        "| 299 | 4.2 | 90.00 | - | 1.400 | 1.500 |",
        "| 599 | 8.5 | 25.00 | 50.00 | 0.800 | 1.600 |",
    ]
    assert (tmp_path / "learning_curve_sft.png").is_file()


def test_a_run_without_validations_has_no_curve_section(tmp_path: Path) -> None:
    write_metrics(tmp_path / "sft", "epoch,step,train/loss\n0,9,3.0\n")
    assert curve_lines(tmp_path, "sft") == []


def test_copy_lines_give_each_validations_name_losses_and_gain(tmp_path: Path) -> None:
    write_metrics(tmp_path / "copy_lm", (
        "epoch,step,train/loss,val/loss_names,val/loss_names_no_context,val/name_gain\n"
        "0,99,3.0,,,\n"
        "0,99,,3.25,3.5,0.25\n"
        "0,199,,1.5,3.25,1.75\n"
    ))
    assert copy_lines(tmp_path, "copy_lm")[-2:] == ["| 99 | 3.250 | 3.500 | 0.250 |",
                                                    "| 199 | 1.500 | 3.250 | 1.750 |"]
    write_metrics(tmp_path / "sft", "epoch,step,train/loss,val/loss\n0,9,3.0,\n0,9,,2.0\n")
    assert copy_lines(tmp_path, "sft") == []


@pytest.mark.parametrize(("record", "shown"), [
    ({"steps": 2000, "trained_steps": 600}, "600 (cap 2000)"),
    ({"steps": 1500, "trained_steps": 1500}, "1500"),
    ({"steps": 1500}, "1500"),  # a record written before trained steps were recorded
])
def test_the_runs_table_shows_a_run_stopped_before_its_cap(record: dict, shown: str) -> None:
    assert report_steps(record) == shown


def test_targets_read_met_at_the_bound_and_not_measured_when_absent() -> None:
    lines = target_lines(30 * 60, {"wer/en": 0.05, "cer/zh": 0.1001})
    assert lines[2:] == [
        "- Whole demo <= 30 min: 30.0 min, met.",
        "- sft test English WER <= 5%: 5.00%, met.",
        "- sft test Mandarin CER <= 10%: 10.01%, NOT met.",
    ]
    assert target_lines(31 * 60, None)[2:] == [
        "- Whole demo <= 30 min: 31.0 min, NOT met.",
        "- sft test English WER <= 5%: not measured.",
        "- sft test Mandarin CER <= 10%: not measured.",
    ]


def test_context_cells_keep_grid_order_and_need_the_target_cells() -> None:
    assert list(measurement_cells(3, 0.5, 8.0, list(reversed(TARGET_CELLS)))) == list(TARGET_CELLS)
    assert len(measurement_cells(3, 0.5, 8.0)) == 8
    with pytest.raises(ValueError, match=r"unknown \['sft/none/joint'\]"):
        measurement_cells(3, 0.5, 8.0, [*TARGET_CELLS, "sft/none/joint"])
    with pytest.raises(ValueError, match=r"missing target cells \['context_sft/irrelevant/joint'\]"):
        measurement_cells(3, 0.5, 8.0, TARGET_CELLS[:-1])


@pytest.mark.parametrize("override, message", [
    ("context.cells=[sft/relevant/beam]", "missing target cells"),
    ("quant.methods=[rtn,gptq]", "start from the decoupleq\\+bw model"),
    ("+runs.rl.init_from.nope='.*'", r"runs.rl.init_from names \['nope'\], which are not runs"),
    ("+runs.sft.init_from={rl: '.*'}", r"from each other: \['sft', 'context_sft', 'rl', 'rl_control'\]"),
    ("+comparison.ssl.sssl='.*'", r"comparison.ssl names \['sssl'\]"),
])
def test_a_bad_measurement_choice_fails_before_any_work(tmp_path: Path, override: str, message: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=[f"out_dir={tmp_path / 'demo'}", override])
    with pytest.raises(ValueError, match=message):
        run_demo(cfg)
    assert not (tmp_path / "demo").exists()


def test_a_run_comes_after_the_runs_it_starts_from() -> None:
    runs = {"a": {"init_from": {"c": ".*"}}, "b": {}, "c": {"init_from": {"b": ".*"}}, "d": None}
    assert run_order(runs) == ["b", "c", "a", "d"]  # as listed where nothing forces another order


def test_the_context_profile_trains_the_copying_llm_before_context_sft(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=["profile=context"])
    order = run_order(cfg.runs)
    assert order.index("sft") < order.index("copy_lm") < order.index("context_sft")
    assert cfg.runs.copy_lm.stage == "lm" and "stage.fresh_names=1.0" in cfg.runs.copy_lm.overrides
    # the SFT model first, then the copying LLM over its llm. parameters
    assert init_from_overrides(tmp_path, cfg.runs.context_sft.init_from) == [
        f"stage.init_from=[{{path: {tmp_path / 'sft'}, include: ['.*']}}, "
        f"{{path: {tmp_path / 'copy_lm'}, include: ['^llm\\.']}}]"]


@pytest.mark.parametrize("profile, settings, cells", [(None, 2, 5), ("full", 4, None)])
def test_profiles_compose(profile: str | None, settings: int, cells: int | None) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=[f"profile={profile}"] if profile else [])
    assert len(cfg.quant.settings) == settings
    assert (cfg.context.cells and len(cfg.context.cells)) == cells


def test_heldout_lines_set_each_run_beside_its_test_figures_and_break_down_by_voice(tmp_path: Path) -> None:
    hyps = tmp_path / "hyps.jsonl"
    rows = [  # en-029 (own variant): 1 error in 3 words; en-us+f4: 2 errors in 2 words; zh+f4: 1 of 4 chars
        {"lang": "en", "speaker": "en-029/r150/p50", "ref": "call anna now", "hyp": "call hannah now"},
        {"lang": "en", "speaker": "en-us+f4/r150/p50", "ref": "play jazz", "hyp": "pray jams"},
        {"lang": "zh", "speaker": "cmn-latn-pinyin+f4/r150/p50", "ref": "外面五度", "hyp": "外面午度"},
    ]
    hyps.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    evals = {"sft": {"metrics": {"wer/en": 0.2, "cer/zh": 0.1}}}
    heldout = {"sft": {"metrics": {"wer/en": 0.5, "cer/zh": 0.25, "num_utts": 3}, "hyps_file": str(hyps)}}
    lines = heldout_lines(evals, heldout)
    assert "| sft | 20.00 | 50.00 | 10.00 | 25.00 | 3 |" in lines
    accent_table = lines[lines.index("| sft, held-out voices: accent | error rate |"):]
    assert "| en-029 | 33.33 |" in accent_table and "| en-us | 100.00 |" in accent_table
    assert "| cmn-latn-pinyin | 25.00 |" in accent_table
    variant_table = lines[lines.index("| sft, held-out voices: variant | error rate |"):]
    assert "| - | 33.33 |" in variant_table and "| f4 | 50.00 |" in variant_table  # 3 errors in 6 units


def test_train_count_lines_give_each_languages_units_and_missed_share_per_bucket() -> None:
    metrics = {"unit_error/en/train_count_0": 1.0, "num_ref_units/en/train_count_0": 4,
               "unit_error/en/train_count_100+": 0.05, "num_ref_units/en/train_count_100+": 200,
               "unit_error/zh/train_count_10-99": 0.25, "num_ref_units/zh/train_count_10-99": 8}  # fmt: skip
    lines = train_count_lines(metrics)
    header = "| times in training transcripts | English words | missed % | Mandarin characters | missed % |"
    assert lines[0] == header
    assert "| 0 | 4 | 100.00 | 0 | - |" in lines and "| 100+ | 200 | 5.00 | 0 | - |" in lines
    assert "| 10-99 | 0 | - | 8 | 25.00 |" in lines and len(lines) == 6
    assert train_count_lines({"wer/en": 0.1}) == []
