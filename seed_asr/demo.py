"""``seed-asr demo``: the staged pipeline on the built-in corpus, end to end, with a report.

corpus -> ssl -> lm -> align -> sft -> context_sft -> rl (+ an SFT-loss control run) -> eval
(+ SFT from the SSL encoder vs a random one) -> context measurement (keyword recall, B-WER, joint beam
search) -> quantization table (RTN / GPTQ / decoupleQ / quant_sft) -> report.
Each stage runs as the command a user would type (``python -m seed_asr.train stage=...``), printed
before it starts, in its own folder under ``out_dir``. Every step is skipped when its result exists,
so a killed demo resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig, OmegaConf

from seed_asr.data.cmvn import write_split_cmvn
from seed_asr.data.corpus.build import HELDOUT_SPLIT, build_corpus
from seed_asr.measure_context import context_report_lines, measure_context, measurement_cells
from seed_asr.quant.measure import check_methods, measure_quantization, quant_report_lines
from seed_asr.report import write_report
from seed_asr.rl_report import rl_gains, rl_report_lines

log = logging.getLogger(__name__)
T = TypeVar("T")


def prepare_corpus(out: Path, cfg: DictConfig) -> Path:
    """Build the corpus and its CMVN statistics unless they exist."""
    corpus = out / "corpus"
    if not (corpus / "stats.json").exists():
        heldout = cfg.corpus.get("heldout_voices")
        build_corpus(corpus, cfg.corpus.num_utterances, seed=cfg.corpus.seed,
                     invented_names=cfg.corpus.invented_names, splits=dict(cfg.corpus.splits),
                     heldout_voices=OmegaConf.to_container(heldout) if heldout else None, overwrite=True)
    if not (corpus / "cmvn.json").exists():  # the corpus command writes it too
        write_split_cmvn(corpus, cfg.cmvn_utterances)
    return corpus


def _init_from(out: Path, sources: dict[str, str] | None) -> list[str]:
    if not sources:
        return []
    items = ", ".join(f"{{path: {out / run}, include: ['{rx}']}}" for run, rx in sources.items())
    return [f"stage.init_from=[{items}]"]


def run_logged(cmd: list[str], log_file: Path) -> None:
    """Run a command, echoing it, with its output in ``log_file``; raise naming the log on failure."""
    print("$ " + shlex.join(cmd), flush=True)
    with log_file.open("a") as handle:
        code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({code}); last lines of {log_file}:\n{tail}")


def train_run(
    out: Path, corpus: Path, name: str, stage: str, steps: int, extra: list[str], cfg: DictConfig
) -> dict:
    """One stage run in ``out/name``; skipped when it already finished, resumed when interrupted."""
    run_dir = out / name
    done = run_dir / "done.json"
    record = {"run": name, "stage": stage, "steps": steps}
    if done.exists():
        return record
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "seed_asr.train",
        f"stage={stage}",
        f"experiment={cfg.stage_experiment}",
        f"paths.corpus_dir={corpus}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={steps}",
        "ckpt_path=last",
        *cfg.train_overrides,
        *extra,
    ]
    run_logged(cmd, run_dir / "stdout.log")
    done.write_text(json.dumps(record))
    return record


def eval_run(
    out: Path, corpus: Path, name: str, overrides: Sequence[str] = (), split: str = "test"
) -> dict[str, Any]:
    """WER/CER of a run's last checkpoint on a corpus split (``out/eval_<name>[_<split>]/results.json``)."""
    eval_dir = out / (f"eval_{name}" if split == "test" else f"eval_{name}_{split}")
    results = eval_dir / "results.json"
    if not results.exists():
        cmd = [
            sys.executable,
            "-m",
            "seed_asr.eval",
            f"ckpt={out / name}",
            f"paths.corpus_dir={corpus}",
            f"hydra.run.dir={eval_dir}",
            f"shards={corpus / split / 'shard-*.tar'}",
            *overrides,
        ]
        eval_dir.mkdir(parents=True, exist_ok=True)
        run_logged(cmd, eval_dir / "stdout.log")
    return json.loads(results.read_text()) | {"hyps_file": str(eval_dir / "hyps.jsonl")}


class Clock:
    """Wall time of each demo step, kept in ``path`` and accumulated over invocations: a step that a
    resumed demo finds done adds nothing, an interrupted one counts both of its parts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.steps: list[str] = []  # run by this invocation, in order

    def run(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, its time added to step ``name``."""
        self.steps.append(name)
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.time() - start, 1)
            self.path.write_text(json.dumps(self.seconds, indent=2))

    def timings(self, details: Mapping[str, dict] | None = None) -> list[dict]:
        """This invocation's steps in order: ``{"run": name, **details[name], "seconds": accumulated}``."""
        details = details or {}
        return [{"run": n, **details.get(n, {}), "seconds": self.seconds[n]} for n in self.steps]


def context_cells(cfg: DictConfig) -> list[str] | None:
    """The context grid cells the demo evaluates (None: all)."""
    return list(cfg.context.cells) if cfg.context.cells else None


def check_config(cfg: DictConfig) -> None:
    """Fail before any work on measurement choices that the later sections would reject."""
    if cfg.context.enabled:
        measurement_cells(cfg.context.beam_size, cfg.context.alpha, cfg.context.prune_threshold,
                          context_cells(cfg))
    if cfg.quant.enabled:
        check_methods(list(cfg.quant.methods), list(cfg.quant.sft_settings))


def run_demo(cfg: DictConfig) -> Path:
    """Everything the README's main command does; returns the report's path."""
    check_config(cfg)
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(out / "timings.json")
    corpus = clock.run("corpus", prepare_corpus, out, cfg)
    runs: dict[str, dict] = {}  # training run -> its stage and steps
    for name, run in cfg.runs.items():
        extra = _init_from(out, run.get("init_from")) + list(run.get("overrides") or [])
        runs[name] = clock.run(name, train_run, out, corpus, name, run.stage, run.steps, extra, cfg)
    for kind in ("ssl", "random"):
        name, init = f"sft_{kind}_encoder", _init_from(out, cfg.comparison[kind])
        runs[name] = clock.run(name, train_run, out, corpus, name, "sft", cfg.comparison.steps, init, cfg)
    evaluate = {name: [*cfg.eval_overrides, *(o or [])] for name, o in cfg.evaluate.items()}
    evaluate |= {"sft_ssl_encoder": list(cfg.eval_overrides), "sft_random_encoder": list(cfg.eval_overrides)}
    evals = clock.run("eval", lambda: {name: eval_run(out, corpus, name, o) for name, o in evaluate.items()})
    heldout_runs = list(cfg.evaluate_heldout or [])
    if heldout_runs and not any((corpus / HELDOUT_SPLIT).glob("shard-*.tar")):
        log.warning("the corpus in %s has no %r split: no run is evaluated on held-out voices", corpus,
                    HELDOUT_SPLIT)
        heldout_runs = []
    heldout = clock.run("eval heldout", lambda: {
        name: eval_run(out, corpus, name, evaluate.get(name, cfg.eval_overrides), HELDOUT_SPLIT)
        for name in heldout_runs
    })
    sections: list[str] = []
    if cfg.rl:
        names = (cfg.rl.before, cfg.rl.after, cfg.rl.control)
        gains = rl_gains({n: evals[n]["metrics"] for n in names}, *names)
        sections += [
            "## RL (MWER with a keyword-weighted WER reward)",
            "",
            f"Test split with each utterance's own context; `{cfg.rl.control}` trains the same start "
            "for the same steps with the SFT loss, separating the RL objective from more training.",
            "",
            *rl_report_lines(gains, *names),
        ]
    if cfg.context.enabled:
        context = clock.run(
            "context measurement",
            measure_context,
            out / "context",
            corpus,
            out / cfg.context.sft,
            out / cfg.context.context_sft,
            beam_size=cfg.context.beam_size,
            alpha=cfg.context.alpha,
            prune_threshold=cfg.context.prune_threshold,
            overrides=list(cfg.eval_overrides),
            cells=context_cells(cfg),
        )
        sections += ["", *context_report_lines(context)]
    if cfg.quant.enabled:
        quant = clock.run(
            "quantization measurement",
            measure_quantization,
            out / "quant",
            corpus,
            out / cfg.quant.run,
            settings=list(cfg.quant.settings),
            sft_settings=list(cfg.quant.sft_settings),
            sft_steps=cfg.quant.sft_steps,
            experiment=cfg.stage_experiment,
            methods=list(cfg.quant.methods),
            quant_overrides=list(cfg.quant.overrides),
            eval_overrides=list(cfg.eval_overrides),
            sft_overrides=list(cfg.train_overrides),
        )
        sections += [
            "",
            f"## Quantization of `{cfg.quant.run}` (test split, greedy decoding)",
            "",
            *quant_report_lines(quant),
        ]
    timings = clock.timings(runs)
    total = sum(t["seconds"] for t in timings)
    report = write_report(out, timings, evals, total_seconds=total, sections=sections, heldout=heldout)
    print(f"report: {report}")
    return report


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_demo(cfg)


if __name__ == "__main__":
    main()
