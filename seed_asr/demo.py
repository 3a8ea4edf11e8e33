"""``seed-asr demo``: the staged pipeline on the built-in corpus, end to end, with a report.

corpus -> ssl -> lm -> align -> sft -> eval (+ SFT from the SSL encoder vs a random one) -> report.
Each stage runs as the command a user would type (``python -m seed_asr.train stage=...``), printed
before it starts, in its own folder under ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from seed_asr.data.cmvn import write_split_cmvn
from seed_asr.data.corpus.build import build_corpus
from seed_asr.report import write_report

log = logging.getLogger(__name__)


def prepare_corpus(out: Path, cfg: DictConfig) -> Path:
    """Build the corpus and its CMVN statistics unless they exist."""
    corpus = out / "corpus"
    if not (corpus / "stats.json").exists():
        build_corpus(corpus, cfg.corpus.num_utterances, seed=cfg.corpus.seed, overwrite=True)
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
    out: Path, corpus: Path, name: str, stage: str, steps: int, init: list[str], cfg: DictConfig
) -> dict:
    """One stage run in ``out/name``; skipped when it already finished, resumed when interrupted."""
    run_dir = out / name
    done = run_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    cmd = [
        sys.executable,
        "-m",
        "seed_asr.train",
        f"stage={stage}",
        f"experiment={cfg.experiment}",
        f"paths.corpus_dir={corpus}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={steps}",
        "ckpt_path=last",
        *init,
    ]
    run_logged(cmd, run_dir / "stdout.log")
    record = {"run": name, "stage": stage, "steps": steps, "seconds": round(time.time() - start, 1)}
    done.write_text(json.dumps(record))
    return record


def eval_run(out: Path, corpus: Path, name: str) -> dict[str, Any]:
    """Test-split WER/CER of a run's last checkpoint (``out/eval_<name>/results.json``)."""
    eval_dir = out / f"eval_{name}"
    results = eval_dir / "results.json"
    if not results.exists():
        cmd = [
            sys.executable,
            "-m",
            "seed_asr.eval",
            f"ckpt={out / name}",
            f"paths.corpus_dir={corpus}",
            f"hydra.run.dir={eval_dir}",
        ]
        eval_dir.mkdir(parents=True, exist_ok=True)
        run_logged(cmd, eval_dir / "stdout.log")
    return json.loads(results.read_text())


def run_demo(cfg: DictConfig) -> Path:
    """Everything the README's main command does; returns the report's path."""
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    corpus = prepare_corpus(out, cfg)
    timings = [{"run": "corpus", "seconds": round(time.time() - start, 1)}]
    for name, run in cfg.runs.items():
        timings.append(
            train_run(out, corpus, name, run.stage, run.steps, _init_from(out, run.get("init_from")), cfg)
        )
    for kind in ("ssl", "random"):
        timings.append(
            train_run(
                out,
                corpus,
                f"sft_{kind}_encoder",
                "sft",
                cfg.comparison.steps,
                _init_from(out, cfg.comparison[kind]),
                cfg,
            )
        )
    evals = {
        name: eval_run(out, corpus, name) for name in [*cfg.evaluate, "sft_ssl_encoder", "sft_random_encoder"]
    }
    report = write_report(out, timings, evals, total_seconds=time.time() - start)
    print(f"report: {report}")
    return report


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_demo(cfg)


if __name__ == "__main__":
    main()
