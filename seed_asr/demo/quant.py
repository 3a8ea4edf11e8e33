"""Measurement for the demo report: WER/CER, size and time of RTN, GPTQ and decoupleQ (without and with
block-wise refinement, and with quant_sft) at several bit widths, against the full-precision model.

Every step writes into ``out_dir`` and is skipped when its result exists, so an interrupted measurement
resumes. Quantization and evaluation run in this process (Hydra compose of ``conf/quantize.yaml`` and
``conf/eval.yaml``); quant_sft runs as the training command a user would type.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seed_asr.artifacts.quantized import read_report
from seed_asr.config import compose_config
from seed_asr.demo.runs import run_logged
from seed_asr.demo.targets import verdict
from seed_asr.eval import evaluate
from seed_asr.quantize import quantize

SETTINGS = ("w4g64", "w3g64", "w2g64", "w2_per_channel")
# (label, method, block-wise refinement)
METHODS = (("rtn", "rtn", False), ("gptq", "gptq", False), ("decoupleq", "decoupleq", False),
           ("decoupleq+bw", "decoupleq", True))


def _eval(ckpt: Path, out: Path, corpus_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    results = out / "results.json"
    if not results.exists():
        evaluate(compose_config("eval", [f"ckpt={ckpt}", f"paths.corpus_dir={corpus_dir}", *overrides], out))
    return json.loads(results.read_text())["metrics"]


def check_methods(methods: Sequence[str], sft_settings: Sequence[str]) -> list[tuple[str, str, bool]]:
    """The `METHODS` rows labelled ``methods``, in table order.

    Raises:
        ValueError: an unknown label, or quant_sft asked for without the decoupleq+bw model it starts from.
    """
    known = [label for label, _, _ in METHODS]
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"quantization methods {unknown} unknown; choose from {known}")
    if sft_settings and "decoupleq+bw" not in methods:
        raise ValueError(
            f"sft_settings {list(sft_settings)} start from the decoupleq+bw model: add it to methods"
        )
    return [row for row in METHODS if row[0] in methods]


def measure_quantization(out_dir: str | Path, corpus_dir: str | Path, ckpt: str | Path,
                         settings: Sequence[str] = SETTINGS, sft_settings: Sequence[str] = ("w2g64",),
                         sft_steps: int = 200, experiment: str = "demo",
                         methods: Sequence[str] = tuple(label for label, _, _ in METHODS),
                         quant_overrides: Sequence[str] = (), eval_overrides: Sequence[str] = (),
                         sft_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Quantize ``ckpt`` every way and evaluate each result on the test split.

    Args:
        out_dir: where every quantized folder, eval and quant_sft run goes.
        corpus_dir: the built-in corpus (calibration: its train split; scoring: its test split).
        ckpt: the float stage checkpoint (or run folder).
        settings: ``conf/quant`` names.
        sft_settings: settings whose decoupleQ + block-wise model also gets ``sft_steps`` of quant_sft.
        sft_steps: optimizer steps of each quant_sft run.
        methods: labels of `METHODS` to run (quant_sft needs "decoupleq+bw").
        experiment: experiment config of the quant_sft runs.
        quant_overrides, eval_overrides, sft_overrides: extra Hydra overrides of ``seed-asr quantize``,
            ``seed-asr eval`` and the quant_sft training runs.

    Returns:
        {"fp": metrics, "runs": [one row per (setting, method): wer, cer, bytes, ratio_vs_fp16,
        seconds, mean_error, ...]}.
    """

    rows_of = check_methods(methods, sft_settings)
    out, corpus = Path(out_dir).resolve(), Path(corpus_dir).resolve()
    fp = _eval(Path(ckpt), out / "eval_fp", corpus, eval_overrides)
    rows = []
    for setting in settings:
        for label, method, blockwise in rows_of:
            folder = out / f"{setting}_{label}"
            if not (folder / "quant_report.json").exists():
                overrides = [f"ckpt={ckpt}", f"paths.corpus_dir={corpus}", f"quant={setting}",
                             f"method={method}", f"blockwise={str(blockwise).lower()}", *quant_overrides]
                quantize(compose_config("quantize", overrides, folder))
            metrics = _eval(folder, out / f"eval_{setting}_{label}", corpus, eval_overrides)
            rows.append(_row(setting, label, folder, metrics))
        if setting in sft_settings:
            run = out / f"{setting}_decoupleq+bw+sft"
            if not (run / "quantized" / "model.safetensors").exists():
                run.mkdir(parents=True, exist_ok=True)
                source = out / f"{setting}_decoupleq+bw"
                run_logged([sys.executable, "-m", "seed_asr.train", "stage=quant_sft",
                            f"experiment={experiment}", f"paths.corpus_dir={corpus}", f"hydra.run.dir={run}",
                            f"stage.quantized={source}", f"trainer.max_steps={sft_steps}",
                            f"data.batches_per_epoch={sft_steps}", *sft_overrides], run / "stdout.log")
            metrics = _eval(run / "quantized", out / f"eval_{setting}_sft", corpus, eval_overrides)
            rows.append(_row(setting, "decoupleq+bw+sft", out / f"{setting}_decoupleq+bw", metrics))
    result = {"fp": fp, "runs": rows}
    (out / "quant_results.json").write_text(json.dumps(result, indent=2))
    return result


def _row(setting: str, label: str, folder: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    report = read_report(folder)
    return {"setting": setting, "method": label, **error_rates(metrics),
            "bytes": report["size"]["quantized_bytes"], "fp16_bytes": report["size"]["fp16_bytes"],
            "ratio_vs_fp16": report["size"]["ratio_vs_fp16"], "seconds": report["seconds"],
            "mean_error": report["mean_error"]}


def error_rates(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Overall error rate (words for English, characters for Mandarin), English WER, Mandarin CER."""
    return {"wer": metrics["wer"], "wer_en": metrics.get("wer/en"), "cer_zh": metrics.get("cer/zh")}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _relative(wer: float, base: float) -> float:
    return (wer - base) / base if base > 0 else float("inf") if wer > 0 else 0.0


def quant_report_lines(result: dict[str, Any]) -> list[str]:
    """Markdown: one table row per (setting, method) and the targets with their verdicts.

    The error rate is the corpus's mixed measure (word errors for English, character errors for Mandarin).
    """
    fp = error_rates(result["fp"])
    lines = ["| setting | method | error rate | WER en | CER zh | rel. vs fp | size (KB) | x fp16 | "
             "quant. time (s) | mean layer error |", "|---|---|---|---|---|---|---|---|---|---|",
             f"| full precision | - | {_fmt(fp['wer'])} | {_fmt(fp['wer_en'])} | {_fmt(fp['cer_zh'])} | "
             "- | - | 1 | - | - |"]
    for r in result["runs"]:
        rel = _relative(r["wer"], fp["wer"])
        lines.append(f"| {r['setting']} | {r['method']} | {_fmt(r['wer'])} | {_fmt(r['wer_en'])} | "
                     f"{_fmt(r['cer_zh'])} | {rel:+.1%} | "
                     f"{r['bytes'] / 1024:.0f} | {r['ratio_vs_fp16']:.3f} | {r['seconds']:.1f} | "
                     f"{r['mean_error']:.4f} |")
    lines += ["", *[f"- {text}: {verdict(ok, fp['wer'])}" for text, ok in quant_targets(result)]]
    return lines


def quant_targets(result: dict[str, Any]) -> list[tuple[str, bool]]:
    """The issue's targets that the measured rows allow checking, each with whether it is met."""
    fp = result["fp"]["wer"]
    wer = {(r["setting"], r["method"]): r["wer"] for r in result["runs"]}
    checks = []
    if ("w4g64", "decoupleq+bw") in wer:
        rel = _relative(wer[("w4g64", "decoupleq+bw")], fp)
        checks.append((f"decoupleQ W4 g64 within 2% relative of full precision ({rel:+.1%})", rel <= 0.02))
    if ("w2g64", "decoupleq+bw+sft") in wer:
        rel = _relative(wer[("w2g64", "decoupleq+bw+sft")], fp)
        checks.append((f"decoupleQ + SFT W2 g64 within 10% relative of full precision ({rel:+.1%})",
                       rel <= 0.10))
    for setting in ("w2g64", "w2_per_channel"):
        if all((setting, m) in wer for m in ("rtn", "gptq", "decoupleq+bw")):
            best = wer[(setting, "decoupleq+bw")]
            others = min(wer[(setting, "rtn")], wer[(setting, "gptq")])
            checks.append((f"decoupleQ better than GPTQ and RTN at {setting} ({best:.4f} vs {others:.4f})",
                           best < others))
    return checks
