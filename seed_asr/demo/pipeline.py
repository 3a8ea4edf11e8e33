"""``seed-asr demo``: the staged pipeline on the built-in corpus, end to end, with a report.

corpus -> ssl -> lm -> align -> sft -> context_sft -> rl (+ an SFT-loss control run) -> eval
(+ SFT from the SSL encoder vs a random one) -> context measurement (keyword recall, B-WER, joint beam
search) -> quantization table (RTN / GPTQ / decoupleQ / quant_sft) -> report.
Each stage runs as the command a user would type (``python -m seed_asr.train stage=...``), printed
before it starts, in its own folder under ``out_dir``. Every step is skipped when its result exists,
so a killed demo resumes where it stopped; ``out_dir`` keeps the settings its results were made with
(`seed_asr.demo.settings`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seed_asr.corpus.build import HELDOUT_SPLIT, build_corpus
from seed_asr.data.cmvn import write_split_cmvn
from seed_asr.demo.context import context_report_lines, measure_context, measurement_cells
from seed_asr.demo.quant import check_methods, measure_quantization, quant_report_lines
from seed_asr.demo.report import write_report
from seed_asr.demo.rl_report import rl_gains, rl_report_lines
from seed_asr.demo.runs import Clock, eval_run, init_from_overrides, train_run
from seed_asr.demo.settings import hold_settings

log = logging.getLogger(__name__)


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


def context_cells(cfg: DictConfig) -> list[str] | None:
    """The context grid cells the demo evaluates (None: all)."""
    return list(cfg.context.cells) if cfg.context.cells else None


def run_order(runs: DictConfig | dict) -> list[str]:
    """The training runs in the order they can run: as listed, except that a run comes after every run
    its ``init_from`` names (so a profile may add a run that an earlier-listed run starts from).

    Raises:
        ValueError: a run starts from a run that is not in ``runs``, or runs start from each other.
    """
    sources = {name: list((run or {}).get("init_from") or {}) for name, run in runs.items()}
    for name, names in sources.items():
        unknown = [s for s in names if s not in sources]
        if unknown:
            raise ValueError(f"runs.{name}.init_from names {unknown}, which are not runs: {list(sources)}")
    order: list[str] = []
    while len(order) < len(sources):
        ready = [n for n in sources if n not in order and all(s in order for s in sources[n])]
        if not ready:
            raise ValueError(f"runs start from each other: {[n for n in sources if n not in order]}")
        order.append(ready[0])
    return order


def check_config(cfg: DictConfig) -> None:
    """Fail before any work on run plans and measurement choices that later steps would reject."""
    run_order(cfg.runs)
    for kind in ("ssl", "random"):
        unknown = [s for s in cfg.comparison[kind] or {} if s not in cfg.runs]
        if unknown:
            raise ValueError(f"comparison.{kind} names {unknown}, which are not runs: {list(cfg.runs)}")
    if cfg.context.enabled:
        measurement_cells(cfg.context.beam_size, cfg.context.alpha, cfg.context.prune_threshold,
                          context_cells(cfg))
    if cfg.quant.enabled:
        check_methods(list(cfg.quant.methods), list(cfg.quant.sft_settings))


def run_demo(cfg: DictConfig) -> Path:
    """Everything the README's main command does; returns the report's path."""
    check_config(cfg)
    out = Path(cfg.out_dir).resolve()
    hold_settings(out, cfg)
    clock = Clock(out / "timings.json")
    corpus = clock.run("corpus", prepare_corpus, out, cfg)
    runs: dict[str, dict] = {}  # training run -> its stage and steps
    for name in run_order(cfg.runs):
        run = cfg.runs[name]
        extra = init_from_overrides(out, run.get("init_from")) + list(run.get("overrides") or [])
        runs[name] = clock.run(name, train_run, out, corpus, name, run.stage, run.steps, extra, cfg)
    for kind in ("ssl", "random"):
        name, init = f"sft_{kind}_encoder", init_from_overrides(out, cfg.comparison[kind])
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
        name: eval_run(out, corpus, name, evaluate.get(name, list(cfg.eval_overrides)), HELDOUT_SPLIT)
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
