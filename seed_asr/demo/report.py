"""The demo's report: markdown + PNG plots from the runs' CSV logs and evaluation results."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from seed_asr.metrics.wer import TRAIN_COUNT_BUCKETS, WERAccumulator  # noqa: E402


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``csv/metrics.csv`` of a run as {metric: [(step, value), ...]}."""
    path = run_dir / "csv" / "metrics.csv"
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    if not path.exists():
        return series
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series[key].append((int(row["step"]), float(value)))
    return series


def accent_breakdown(hyps_file: Path, part: str = "accent") -> dict[str, float]:
    """Error rate per accent (the speaker string up to its variant, e.g. ``en-gb-scotland``) or, with
    ``part="variant"``, per espeak-ng variant (``f4``; ``-`` for a voice's own)."""
    acc = WERAccumulator(group_by=(part,))
    for line in hyps_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        voice = str(row.get("speaker") or "").split("/")[0]
        accent, _, variant = voice.partition("+")
        key = accent if part == "accent" else variant or "-"
        acc.update(row["hyp"], row["ref"], {"lang": row.get("lang"), part: key})
    prefix = f"wer/{part}/"
    return {k.removeprefix(prefix): v for k, v in acc.compute().items() if k.startswith(prefix)}


def _plot_losses(out: Path, runs: list[str]) -> Path:
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        series = read_metrics(out / run)
        for key in ("train/loss", "val/loss"):
            if series.get(key):
                steps, values = zip(*series[key], strict=True)
                ax.plot(steps, values, label=key, marker="o" if key.startswith("val") else None)
        ax.set_title(run)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


DEMO_MINUTES_TARGET = 30.0
WER_EN_TARGET = 0.05
CER_ZH_TARGET = 0.10


def target_lines(total_seconds: float, metrics: dict[str, Any] | None) -> list[str]:
    """The demo's own targets with their verdicts: wall time, and the sft model's test English WER and
    Mandarin CER (met when at or below the target; a figure that was not measured says so)."""
    minutes = total_seconds / 60
    lines = [
        "## Targets",
        "",
        f"- Whole demo <= {DEMO_MINUTES_TARGET:.0f} min: {minutes:.1f} min, "
        f"{'met' if minutes <= DEMO_MINUTES_TARGET else 'NOT met'}.",
    ]
    targets = (("wer/en", "English WER", WER_EN_TARGET), ("cer/zh", "Mandarin CER", CER_ZH_TARGET))
    for key, label, target in targets:
        value = (metrics or {}).get(key)
        if value is None:
            lines.append(f"- sft test {label} <= {100 * target:.0f}%: not measured.")
        else:
            lines.append(f"- sft test {label} <= {100 * target:.0f}%: {_pct(value)}%, "
                         f"{'met' if value <= target else 'NOT met'}.")
    return lines


CURVE_METRICS = ("val/wer/en", "val/cer/zh", "val/loss", "val/loss_other_audio")


def learning_curve(run_dir: Path) -> list[dict[str, float]]:
    """One row per validation of a run: ``step``, ``minutes`` (``time/elapsed_min`` logged with it, when
    the run logged it) and the `CURVE_METRICS` it logged."""
    series = read_metrics(run_dir)
    rows: dict[int, dict[str, float]] = {}
    for key in CURVE_METRICS:
        for step, value in series.get(key, []):
            rows.setdefault(step, {"step": step})[key] = value
    minutes = dict(series.get("time/elapsed_min", []))
    for step, row in rows.items():
        if step in minutes:
            row["minutes"] = minutes[step]
    return [rows[step] for step in sorted(rows)]


def _plot_curve(path: Path, curve: list[dict[str, float]], title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3))
    x_key = "minutes" if all("minutes" in row for row in curve) else "step"
    for key, label in (("val/wer/en", "WER en"), ("val/cer/zh", "CER zh")):
        points = [(row[x_key], 100 * row[key]) for row in curve if key in row]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xlabel(x_key)
    ax.set_ylabel("dev error rate (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curve_lines(out: Path, run: str) -> list[str]:
    """Markdown of a run's learning curve (dev split, at each validation) with its plot."""
    curve = learning_curve(out / run)
    if not curve:
        return []
    _plot_curve(out / f"learning_curve_{run}.png", curve, f"{run}: dev error rate")
    lines = [
        f"## Learning curve of `{run}` (dev split, at each validation)",
        "",
        f"![learning curve](learning_curve_{run}.png)",
        "",
        "| step | minutes | WER en | CER zh | val/loss | val/loss_other_audio |",
        "|---|---|---|---|---|---|",
    ]
    for row in curve:
        minutes = f"{row['minutes']:.1f}" if "minutes" in row else "-"
        losses = [f"{row[k]:.3f}" if k in row else "-" for k in ("val/loss", "val/loss_other_audio")]
        lines.append(f"| {row['step']} | {minutes} | {_pct(row.get('val/wer/en'))} | "
                     f"{_pct(row.get('val/cer/zh'))} | {' | '.join(losses)} |")
    return lines


def copy_lines(out: Path, run: str) -> list[str]:
    """Markdown of what the prompt's names were worth along a text-only copy run (``val/name_gain``, the
    lm stage with a context mixture); nothing for a run that did not log it."""
    series = read_metrics(out / run)
    if not series.get("val/name_gain"):
        return []
    own, none = dict(series.get("val/loss_names", [])), dict(series.get("val/loss_names_no_context", []))
    lines = [
        "",
        f"## Copying from the prompt along `{run}` (dev, loss per name token)",
        "",
        "| step | own context | no context | saved by the context |",
        "|---|---|---|---|",
    ]
    for step, gain in series["val/name_gain"]:
        lines.append(f"| {step} | {own.get(step, float('nan')):.3f} | {none.get(step, float('nan')):.3f} "
                     f"| {gain:.3f} |")
    return lines


def report_steps(record: Mapping[str, Any]) -> str:
    """A run's steps: those it trained, with its cap when it stopped before."""
    steps, trained = record.get("steps", "-"), record.get("trained_steps")
    return f"{trained} (cap {steps})" if trained is not None and trained != steps else str(steps)


def _plot_bars(path: Path, values: dict[str, float], title: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(values) + 2), 3))
    ax.bar(list(values), [100 * v for v in values.values()])
    ax.set_ylabel("error rate (%)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def train_count_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown: the share of reference words (Mandarin characters) missed, by how often the training
    transcripts hold them (``unit_error/<lang>/train_count_<bucket>`` of an eval with ``heard_from``)."""
    langs = [lang for lang in ("en", "zh") if any(k.startswith(f"unit_error/{lang}/") for k in metrics)]
    if not langs:
        return []
    names = {"en": "English words", "zh": "Mandarin characters"}
    lines = [
        "| times in training transcripts | " + " | ".join(f"{names[g]} | missed %" for g in langs) + " |",
        "|---|" + "---|---|" * len(langs),
    ]
    for _, bucket in TRAIN_COUNT_BUCKETS:
        cells = [
            f"{metrics.get(f'num_ref_units/{g}/train_count_{bucket}', 0)} "
            f"| {_pct(metrics.get(f'unit_error/{g}/train_count_{bucket}'))}"
            for g in langs
        ]
        lines.append(f"| {bucket} | " + " | ".join(cells) + " |")
    return lines


def heldout_lines(evals: Mapping[str, dict], heldout: Mapping[str, dict]) -> list[str]:
    """Markdown: each run's error rates on the test split beside the held-out voices, then per voice."""
    lines = [
        "## Voices held out of training (generalisation)",
        "",
        "The corpus's `heldout` split is spoken only by accents and variants that no other split has "
        "(`corpus.heldout_voices`).",
        "",
        "| model (error rates, %) | WER en: test | WER en: held-out voices | CER zh: test "
        "| CER zh: held-out voices | utterances |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in heldout.items():
        test, held = evals.get(name, {}).get("metrics", {}), result["metrics"]
        lines.append(f"| {name} | {_pct(test.get('wer/en'))} | {_pct(held.get('wer/en'))} "
                     f"| {_pct(test.get('cer/zh'))} | {_pct(held.get('cer/zh'))} | {held.get('num_utts')} |")
    for name, result in heldout.items():
        for part in ("accent", "variant"):
            rates = accent_breakdown(Path(result["hyps_file"]), part)
            lines += ["", f"| {name}, held-out voices: {part} | error rate |", "|---|---|"]
            lines += [f"| {key} | {_pct(rate)} |" for key, rate in rates.items()]
    return lines


def write_report(
    out: Path,
    timings: list[dict],
    evals: dict[str, dict],
    total_seconds: float,
    sections: Sequence[str] = (),
    heldout: Mapping[str, dict] | None = None,
) -> Path:
    """Write ``report.md`` (+ PNGs) into ``out`` and return its path.

    ``evals``: run -> test-split results; ``heldout``: run -> results on the held-out voices;
    ``sections``: extra markdown lines.
    """
    train_runs = [t["run"] for t in timings if "stage" in t]
    _plot_losses(out, train_runs)
    lines = [
        "# seed-asr demo report",
        "",
        f"Total wall time: {total_seconds / 60:.1f} min.",
        "",
        "## Runs",
        "",
        "| run | stage | steps | minutes |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t['run']} | {t.get('stage', '-')} | {report_steps(t)} | {t['seconds'] / 60:.1f} |"
        for t in timings
    ]
    lines += [
        "",
        "![loss curves](loss_curves.png)",
        "",
        "## Test split (WER: English, Whisper normaliser; CER: Mandarin characters)",
        "",
        "| model | WER all | WER en | CER zh | utterances |",
        "|---|---|---|---|---|",
    ]
    for name, result in evals.items():
        m = result["metrics"]
        lines.append(
            f"| {name} | {_pct(m.get('wer'))} | {_pct(m.get('wer/en'))} | {_pct(m.get('cer/zh'))} "
            f"| {m.get('num_utts')} |"
        )
    final = evals.get("sft")
    if final:
        domains = {
            k.removeprefix("wer/domain/"): v
            for k, v in final["metrics"].items()
            if k.startswith("wer/domain/")
        }
        _plot_bars(out / "wer_per_domain.png", domains, "sft: error rate per domain")
        hyps = Path(final["hyps_file"])
        accents = accent_breakdown(hyps)
        _plot_bars(out / "wer_per_voice.png", accents, "sft: error rate per voice")
        lines += [
            "",
            "![per domain](wer_per_domain.png) ![per voice](wer_per_voice.png)",
            "",
            "| domain | error rate |",
            "|---|---|",
        ]
        lines += [f"| {d} | {_pct(v)} |" for d, v in domains.items()]
        lines += ["", "| voice | error rate |", "|---|---|"] + [
            f"| {a} | {_pct(v)} |" for a, v in accents.items()
        ]
        by_count = train_count_lines(final["metrics"])
        if by_count:
            lines += ["", "Reference words (characters) substituted or deleted, by how often the training "
                      "transcripts hold them (insertions left out):", "", *by_count]
        lines += ["", "### Sample transcripts (sft, test)", "", "| reference | hypothesis |", "|---|---|"]
        for line in hyps.read_text(encoding="utf-8").splitlines()[:10]:
            row = json.loads(line)
            lines.append(f"| {row['ref']} | {row['hyp']} |")
    if "sft_ssl_encoder" in evals and "sft_random_encoder" in evals:
        ssl_m, rnd_m = evals["sft_ssl_encoder"]["metrics"], evals["sft_random_encoder"]["metrics"]
        lines += [
            "",
            "## SFT from the SSL encoder vs a random encoder (same steps)",
            "",
            "| encoder init | WER all | WER en | CER zh |",
            "|---|---|---|---|",
            f"| SSL (LUISE/BEST-RQ) | {_pct(ssl_m.get('wer'))} | {_pct(ssl_m.get('wer/en'))} "
            f"| {_pct(ssl_m.get('cer/zh'))} |",
            f"| random | {_pct(rnd_m.get('wer'))} | {_pct(rnd_m.get('wer/en'))} "
            f"| {_pct(rnd_m.get('cer/zh'))} |",
        ]
    if heldout:
        lines += ["", *heldout_lines(evals, heldout)]
    lines += ["", *target_lines(total_seconds, final["metrics"] if final else None)]
    if "sft" in train_runs:
        lines += ["", *curve_lines(out, "sft")]
    for run in train_runs:
        lines += copy_lines(out, run)
    lines += ["", *sections]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps({"timings": timings, "evals": evals, "heldout": dict(heldout or {})}, indent=2,
                   ensure_ascii=False)
    )
    return path
