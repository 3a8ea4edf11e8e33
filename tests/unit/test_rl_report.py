"""Before/after-RL comparison figures for the demo report, against hand-computed changes."""

import pytest

from seed_asr.demo.rl_report import rl_gains, rl_report_lines

EVALS = {
    "sft": {"wer": 0.20, "b_wer": 0.50, "keyword_recall": 0.6, "num_utts": 10},
    "rl": {"wer": 0.18, "b_wer": 0.40, "keyword_recall": 0.7},
    "sft_more": {"wer": 0.19, "b_wer": 0.50, "keyword_recall": 0.6},
}


def test_relative_changes_against_the_starting_run():
    gains = rl_gains(EVALS, "sft", "rl", "sft_more")
    assert set(gains) == {"wer", "b_wer", "keyword_recall"}  # u_wer absent from the results
    assert gains["wer"]["rl_rel"] == pytest.approx(-0.10)
    assert gains["wer"]["sft_more_rel"] == pytest.approx(-0.05)
    assert gains["b_wer"]["rl_rel"] == pytest.approx(-0.20)
    assert gains["keyword_recall"]["rl_rel"] == pytest.approx(0.7 / 0.6 - 1)


def test_report_table_and_missing_run():
    lines = rl_report_lines(rl_gains(EVALS, "sft", "rl"), "sft", "rl")
    assert lines[0] == "| metric | sft | rl | rl vs sft |"
    assert "| wer | 20.00 | 18.00 | -10.0% rel |" in lines
    assert lines[-1] == "- rl lowers WER and B-WER by >= 5% relative: met."  # -10% and -20%
    assert rl_report_lines(rl_gains(EVALS, "sft", "sft_more"), "sft", "sft_more")[-1].endswith(": NOT met.")
    untrained = {"sft": {"wer": 1.05, "b_wer": 1.0}, "rl": {"wer": 0.98, "b_wer": 0.9}}
    assert "not assessed: the reference model's error rate is 105.0%" in rl_report_lines(
        rl_gains(untrained, "sft", "rl"), "sft", "rl"
    )[-1]
    no_recall = {"sft": {"wer": 0.5, "keyword_recall": 0.0}, "rl": {"wer": 0.5, "keyword_recall": 0.1}}
    lines = rl_report_lines(rl_gains(no_recall, "sft", "rl"), "sft", "rl")
    assert "| keyword_recall | 0.00 | 10.00 | n/a |" in lines  # no relative change from 0
    with pytest.raises(KeyError, match="context_sft"):
        rl_gains(EVALS, "context_sft", "rl")
