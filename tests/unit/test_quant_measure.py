"""The quantization report's targets and table from hand-made results."""

from __future__ import annotations

import pytest

from seed_asr.demo.quant import check_methods, quant_report_lines, quant_targets


def row(setting: str, method: str, wer: float) -> dict:
    return {"setting": setting, "method": method, "wer": wer, "wer_en": None, "cer_zh": wer / 2,
            "bytes": 2048, "fp16_bytes": 8192, "ratio_vs_fp16": 0.25, "seconds": 1.5, "mean_error": 0.1}


def test_targets_compare_against_full_precision_and_baselines() -> None:
    result = {"fp": {"wer": 0.10, "cer/zh": 0.05},
              "runs": [row("w4g64", "decoupleq+bw", 0.1019), row("w2g64", "decoupleq+bw+sft", 0.111),
                       row("w2g64", "rtn", 0.5), row("w2g64", "gptq", 0.3),
                       row("w2g64", "decoupleq+bw", 0.2)]}
    checks = quant_targets(result)
    assert [ok for _, ok in checks] == [True, False, True]  # +1.9%, +11.0%, 0.2 < 0.3
    assert "+1.9%" in checks[0][0] and "+11.0%" in checks[1][0]
    lines = quant_report_lines(result)
    assert lines[2].startswith("| full precision | - | 0.1000 | - | 0.0500 |")
    assert "| w2g64 | rtn | 0.5000 | - | 0.2500 | +400.0% | 2 | 0.250 | 1.5 | 0.1000 |" in lines
    assert lines[-2:] == [f"- {checks[1][0]}: NOT met", f"- {checks[2][0]}: met"]


def test_targets_are_not_assessed_on_a_model_that_does_not_transcribe() -> None:
    result = {"fp": {"wer": 0.985}, "runs": [row("w4g64", "decoupleq+bw", 0.982)]}
    assert quant_targets(result)[0][1]  # -0.3%: "met" in numbers alone
    assert quant_report_lines(result)[-1].endswith(
        ": not assessed: the reference model's error rate is 98.5% (>= 50%), it does not transcribe yet"
    )


def test_methods_are_checked_and_kept_in_table_order() -> None:
    rows = check_methods(["decoupleq+bw", "rtn"], ["w2g64"])
    assert [label for label, _, _ in rows] == ["rtn", "decoupleq+bw"]
    with pytest.raises(ValueError, match=r"\['awq'\] unknown"):
        check_methods(["rtn", "awq"], [])
    with pytest.raises(ValueError, match="start from the decoupleq\\+bw model"):
        check_methods(["rtn", "gptq"], ["w2g64"])
