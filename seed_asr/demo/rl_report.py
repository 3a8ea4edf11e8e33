"""The RL stage's figures for the demo report: WER and keyword metrics before / after RL.

``seed-asr eval`` already writes every number (``results.json``: ``wer``, ``b_wer``, ``u_wer``,
``keyword_recall``); this module only compares runs. A control run (the starting model trained for
the same steps with the SFT loss) separates the effect of the RL objective from that of more steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from seed_asr.demo.targets import verdict

METRICS = ("wer", "b_wer", "u_wer", "keyword_recall")
RL_GAIN_TARGET = -0.05  # RL lowers WER and B-WER by at least 5% relative


def relative_change(before: float, after: float) -> float:
    """(after - before) / before; negative is a reduction (NaN when before is 0)."""
    return (after - before) / before if before else float("nan")


def rl_gains(
    evals: Mapping[str, Mapping[str, Any]], before: str, after: str, control: str | None = None
) -> dict[str, dict[str, float]]:
    """Metrics of the runs and the relative change of each against `before`.

    Args:
        evals: run name -> ``seed-asr eval`` metrics (``results.json["metrics"]``).
        before: the run RL started from (sft or context_sft).
        after: the RL run.
        control: the same start trained with the SFT loss for as many steps (optional).

    Returns:
        {metric: {"<run>": value, "<run>_rel": relative change vs before}} for the metrics present.
    """
    runs = [r for r in (before, after, control) if r]
    missing = [r for r in runs if r not in evals]
    if missing:
        raise KeyError(f"no evaluation results for run(s) {missing}")
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        if not all(metric in evals[r] for r in runs):
            continue
        row = {r: float(evals[r][metric]) for r in runs}
        for r in runs[1:]:
            row[f"{r}_rel"] = relative_change(row[before], row[r])
        out[metric] = row
    return out


def _change_cell(rel: float) -> str:
    """A relative change as a table cell; 'n/a' when the starting value was 0 (e.g. keyword recall)."""
    return "n/a" if math.isnan(rel) else f"{100 * rel:+.1f}% rel"


def rl_report_lines(
    gains: Mapping[str, Mapping[str, float]], before: str, after: str, control: str | None = None
) -> list[str]:
    """A markdown table of `rl_gains` (one row per metric, values in %, changes relative to `before`),
    then the target: `after` lowers WER and B-WER by at least 5% relative."""
    runs = [r for r in (before, after, control) if r]
    header = ["metric", *runs, *(f"{r} vs {before}" for r in runs[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric, row in gains.items():
        values = [f"{100 * row[r]:.2f}" for r in runs]
        changes = [_change_cell(row[f"{r}_rel"]) for r in runs[1:]]
        lines.append("| " + " | ".join([metric, *values, *changes]) + " |")
    if "wer" in gains and "b_wer" in gains:
        met = all(gains[m][f"{after}_rel"] <= RL_GAIN_TARGET for m in ("wer", "b_wer"))
        lines += ["", f"- {after} lowers WER and B-WER by >= {-RL_GAIN_TARGET:.0%} relative: "
                  f"{verdict(met, gains['wer'][before])}."]
    return lines
