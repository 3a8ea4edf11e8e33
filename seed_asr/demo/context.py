"""What context SFT and joint beam search buy: keyword recall, B-WER / U-WER and hallucinated keywords.

`measure_context` runs ``seed-asr eval`` (in-process, one folder per cell) on one split for the SFT and
the context-SFT checkpoints with no context, each utterance's relevant context and an irrelevant one
(another dialogue's), with beam search, plus joint beam search of the context-SFT model on the relevant
and irrelevant sets. `context_report_lines` turns the result into markdown for the demo's report.

Targets (Seed-ASR): context SFT raises keyword recall with relevant context by >= 15 points absolute
over SFT; with irrelevant context its WER is at most 5% (relative) worse than with no context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seed_asr.config import compose_config
from seed_asr.demo.targets import verdict
from seed_asr.eval import evaluate

KEYWORD_RECALL_GAIN_TARGET = 0.15
IRRELEVANT_WER_TARGET = 0.05
METRICS = ("wer", "b_wer", "u_wer", "keyword_recall", "keyword_recall/heard", "keyword_recall/unheard",
           "hallucinated_keywords", "num_utts")
#: The cells `summarize` reads: the targets and the hallucinations of joint vs plain beam search.
TARGET_CELLS = ("sft/relevant/beam", "context_sft/none/beam", "context_sft/relevant/beam",
                "context_sft/irrelevant/beam", "context_sft/irrelevant/joint")


def measurement_cells(
    beam_size: int, alpha: float, prune_threshold: float | None, names: Sequence[str] | None = None
) -> dict[str, tuple]:
    """Cell name -> (model, context mode, decoding overrides) of the measurement grid.

    Args:
        beam_size, alpha, prune_threshold: decoding settings (see `measure_context`).
        names: the cells to keep, in grid order (None: all 8); they must include `TARGET_CELLS`.

    Raises:
        ValueError: an unknown cell name, or a target cell left out.
    """
    beam = ["decoding=beam", f"decoding.beam_size={beam_size}", "decoding.nbest=1"]
    prune = "null" if prune_threshold is None else prune_threshold
    joint = [
        "decoding=joint_beam",
        f"decoding.beam_size={beam_size}",
        f"decoding.joint.alpha={alpha}",
        f"decoding.joint.prune_threshold={prune}",
    ]
    cells = {
        f"{model}/{mode}/beam": (model, mode, beam)
        for model in ("sft", "context_sft")
        for mode in ("none", "relevant", "irrelevant")
    }
    for mode in ("relevant", "irrelevant"):
        cells[f"context_sft/{mode}/joint"] = ("context_sft", mode, joint)
    if names is None:
        return cells
    unknown = sorted(set(names) - set(cells))
    missing = [name for name in TARGET_CELLS if name not in names]
    if unknown or missing:
        raise ValueError(
            f"context cells: unknown {unknown} (choose from {list(cells)}), missing target cells {missing}"
        )
    return {name: cell for name, cell in cells.items() if name in names}


def measure_context(
    out_dir: str | Path,
    corpus_dir: str | Path,
    sft_ckpt: str | Path,
    context_sft_ckpt: str | Path,
    split: str = "test",
    beam_size: int = 4,
    alpha: float = 0.5,
    prune_threshold: float | None = 8.0,
    context_seed: int = 0,
    device: str = "auto",
    overrides: Sequence[str] = (),
    cells: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate the measurement grid; finished cells (``results.json`` present) are read back, not rerun.

    Args:
        out_dir: one sub-folder per cell (``<model>_<mode>_<decoding>``) and ``context_results.json``.
        corpus_dir: the corpus (``<corpus>/<split>/shard-*.tar``).
        sft_ckpt, context_sft_ckpt: run folders or checkpoint files.
        split: ``test`` or ``val``.
        beam_size: of plain and joint beam search.
        alpha, prune_threshold: joint beam search settings (`seed_asr.decoding.joint.JointConfig`).
        context_seed: donor order of the irrelevant contexts.
        device: "auto", "cpu", "cuda".
        overrides: extra ``seed-asr eval`` overrides (e.g. ``data.num_workers=0``).
        cells: the grid cells to evaluate (`measurement_cells`; None: all 8).

    Returns:
        ``{"cells": {name: metrics subset}, "summary": {...}, "settings": {...}}`` (also written to
        ``<out_dir>/context_results.json``).
    """
    out = Path(out_dir)
    ckpts = {"sft": str(sft_ckpt), "context_sft": str(context_sft_ckpt)}
    grid = measurement_cells(beam_size, alpha, prune_threshold, cells)
    cells = {}
    for name, (model, mode, decoding) in grid.items():
        cell_dir = out / name.replace("/", "_")
        results = cell_dir / "results.json"
        if not results.exists():
            cfg = compose_config("eval",
                [
                    f"ckpt={ckpts[model]}",
                    f"paths.corpus_dir={corpus_dir}",
                    f"split={split}",
                    f"context_mode={mode}",
                    f"context_seed={context_seed}",
                    f"heard_from={Path(corpus_dir) / 'train' / 'shard-*.tar'}",
                    f"device={device}",
                    *decoding,
                    *overrides,
                ],
                cell_dir,
            )
            evaluate(cfg)
        metrics = json.loads(results.read_text())["metrics"]
        cells[name] = {k: metrics[k] for k in METRICS if k in metrics}
    settings = {"split": split, "beam_size": beam_size, "alpha": alpha, "prune_threshold": prune_threshold}
    result = {"cells": cells, "summary": summarize(cells), "settings": settings}
    (out / "context_results.json").write_text(json.dumps(result, indent=2))
    return result


def summarize(cells: dict[str, dict[str, float]]) -> dict[str, float | bool]:
    """The two target figures and the hallucination counts of joint vs plain beam search."""
    recall = lambda name: cells[name].get("keyword_recall", float("nan"))
    gain = recall("context_sft/relevant/beam") - recall("sft/relevant/beam")
    wer_none = cells["context_sft/none/beam"]["wer"]
    wer_irrelevant = cells["context_sft/irrelevant/beam"]["wer"]
    degradation = wer_irrelevant / wer_none - 1.0 if wer_none > 0 else float("inf") * (wer_irrelevant > 0)
    return {
        "keyword_recall_gain": gain,
        "keyword_recall_gain_met": gain >= KEYWORD_RECALL_GAIN_TARGET,
        "irrelevant_wer_degradation": degradation,
        "irrelevant_wer_met": degradation <= IRRELEVANT_WER_TARGET,
        "hallucinated_beam": cells["context_sft/irrelevant/beam"]["hallucinated_keywords"],
        "hallucinated_joint": cells["context_sft/irrelevant/joint"]["hallucinated_keywords"],
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def context_report_lines(result: dict[str, Any]) -> list[str]:
    """Markdown section of the demo report: the grid as a table and the targets."""
    s, settings, cells = result["summary"], result["settings"], result["cells"]
    lines = [
        "## Context: context SFT and joint beam search",
        "",
        f"{settings['split']} split, beam {settings['beam_size']}; joint beam: alpha {settings['alpha']}, "
        f"prune threshold {settings['prune_threshold']}. Irrelevant context = another dialogue's history and "
        "hot words (minus words of the utterance). Hallucinated = prompt hot words the hypothesis has more "
        "often than the reference. Keyword recall of the names heard in a training transcript and of the "
        "unheard ones (only the prompt can give those).",
        "",
        "| model | context | decoding | WER % | B-WER % | U-WER % | keyword recall % | heard % | unheard % "
        "| hallucinated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in cells.items():
        model, mode, decoding = name.split("/")
        recalls = ("keyword_recall", "keyword_recall/heard", "keyword_recall/unheard")
        rates = [_pct(m[k]) if k in m else "-" for k in ("wer", "b_wer", "u_wer", *recalls)]
        rates.append(str(m["hallucinated_keywords"]))
        lines.append(f"| {model} | {mode} | {decoding} | {' | '.join(rates)} |")
    recall_verdict = verdict(s["keyword_recall_gain_met"], cells["context_sft/relevant/beam"]["wer"])
    irrelevant_verdict = verdict(s["irrelevant_wer_met"], cells["context_sft/none/beam"]["wer"])
    lines += [
        "",
        f"- Keyword recall gain of context SFT over SFT (relevant context): {_pct(s['keyword_recall_gain'])} "
        f"points (target >= {_pct(KEYWORD_RECALL_GAIN_TARGET)}: {recall_verdict}).",
        f"- Context SFT WER with irrelevant vs no context: {_pct(s['irrelevant_wer_degradation'])}% relative "
        f"(target <= {_pct(IRRELEVANT_WER_TARGET)}%: {irrelevant_verdict}).",
        f"- Hallucinated hot words with irrelevant context: {s['hallucinated_beam']} with beam search, "
        f"{s['hallucinated_joint']} with joint beam search.",
    ]
    return lines
