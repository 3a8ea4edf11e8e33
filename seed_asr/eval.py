"""``seed-asr eval ckpt=<run or checkpoint> [checkpoint=best] [split=test] [shards=...]``: WER/CER of a
checkpoint.

Writes ``results.json`` (overall, per language, domain and speaker, counts, the normaliser, the checkpoint
file that was read, and the utterances left out of the scores: ``num_skipped`` and
``num_skipped/<reason>`` among the metrics, ``skipped`` naming each with its reason) and ``hyps.jsonl``
(one line per decoded utterance) into the run folder. Each appears only complete (written under a
temporary name, then renamed).

Which utterances are decoded: those within ``min_duration`` / ``max_duration`` of the eval config (null:
the data config's) and the data config's transcript limits. The Conformer encoder takes any length
(rotary positions; its time and memory grow with the square of the length); a Whisper encoder
(`HFEncoder`) takes at most its 30 s window, which caps ``max_duration``. Unusable samples (undecodable,
non-finite audio, bad records, repeated keys) are skipped too; every skipped utterance is named and
counted in ``results.json``, never silently left out of the WER.

Contexts (``context_mode``): ``none``; ``relevant`` (each utterance's own context from the shard);
``irrelevant`` (the context of an utterance of another dialogue of the same set, without the words of
this utterance, deterministic from ``context_seed``: see `seed_asr.data.contexts.irrelevant_contexts`).
Keyword metrics (B-WER, U-WER, recall) always use the utterance's own hot-word list;
``hallucinated_keywords`` counts hot words OF THE PROMPT that the hypothesis has more often than the
reference. With ``heard_from`` (training shard patterns), keyword recall is also split by names heard in
training or not, and the reference words (Mandarin characters) by how often the training transcripts hold
them (`seed_asr.metrics.wer.TRAIN_COUNT_BUCKETS`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seed_asr.artifacts.loading import LoadedModel, load_speech_llm, pick_device
from seed_asr.data.cmvn import CmvnStats, save_cmvn
from seed_asr.data.contexts import irrelevant_contexts
from seed_asr.data.records import iter_records
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.metrics.wer import WERAccumulator, hallucinated_keywords
from seed_asr.text.units import scoring_units

CONTEXT_MODES = ("none", "relevant", "irrelevant")

log = logging.getLogger(__name__)


def context_mode(cfg: DictConfig) -> str:
    """``cfg.context_mode``, or from ``cfg.use_context`` when null (true: relevant, false: none)."""
    mode = cfg.get("context_mode") or ("relevant" if cfg.use_context else "none")
    if mode not in CONTEXT_MODES:
        raise ValueError(f"context_mode must be one of {CONTEXT_MODES} or null, got {mode!r}")
    if cfg.use_context and mode == "none":
        raise ValueError("use_context=true contradicts context_mode=none")
    return mode


class _PromptContexts:
    """The prompt context of each utterance of a set under a context mode."""

    def __init__(self, mode: str, shards: Any, seed: int) -> None:
        self.mode = mode
        self.table = irrelevant_contexts(list(iter_records(shards)), seed) if mode == "irrelevant" else {}

    def __call__(self, keys: list[str], metas: list[dict]) -> list[dict | None]:
        if self.mode == "none":
            return [None] * len(metas)
        if self.mode == "relevant":
            return [meta.get("context") for meta in metas]
        return [self.table[key] for key in keys]


def duration_limits(cfg: DictConfig, encoder: Any, frame_shift_s: float) -> dict[str, float]:
    """The data module's ``min_duration``, ``max_duration`` and ``max_batch_seconds`` for evaluation: the
    eval config's limits (null: the data config's), ``max_duration`` capped by the encoder's longest
    input (``input_frames`` fbank frames, when it has one), and a batch budget that fits it."""
    longest = getattr(encoder, "input_frames", math.inf) * frame_shift_s
    min_duration = cfg.data.min_duration if cfg.get("min_duration") is None else cfg.min_duration
    max_duration = cfg.data.max_duration if cfg.get("max_duration") is None else cfg.max_duration
    max_duration = min(max_duration, longest)
    budget = max(cfg.data.max_batch_seconds, max_duration)
    return {"min_duration": min_duration, "max_duration": max_duration, "max_batch_seconds": budget}


def eval_batches(cfg: DictConfig, loaded: LoadedModel, shards: Any, device: torch.device,
                 skipped: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """The batches of ``shards`` that hold usable utterances, with features, on ``device``: the data config
    of ``cfg`` with the model's own CMVN (written to the output folder) and the eval duration limits;
    the utterances skipped on the way are appended to ``skipped``."""
    out = Path(cfg.paths.output_dir)
    cmvn = loaded.features.cmvn  # the CMVN the model was trained with, whatever the data config says
    cmvn_path = save_cmvn(CmvnStats(cmvn.mean.cpu(), 1.0 / cmvn.inv_std.cpu(), 0, 0), out / "cmvn.json")
    limits = duration_limits(cfg, loaded.model.encoder, loaded.model.frame_shift_s)
    datamodule = instantiate(
        cfg.data, test_shards=shards, cmvn_path=str(cmvn_path), output_dir=str(out), **limits
    )
    datamodule.setup("test")
    for batch in datamodule.test_dataloader():
        skipped += batch["skipped"]
        if batch["keys"]:
            yield datamodule.on_after_batch_transfer(
                {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}, 0
            )


@dataclass(frozen=True)
class TrainingExposure:
    """What a model trained on some shards has heard (from their records only: no audio is read).

    Attributes:
        names: the records' names (``context.entities``).
        unit_counts: (lang, scoring unit) -> occurrences in the records' transcripts.
    """

    names: frozenset[str]
    unit_counts: Counter[tuple[str, str]]


def training_exposure(patterns: Any) -> TrainingExposure:
    """The `TrainingExposure` of training shard patterns (read once per process and patterns)."""
    patterns = OmegaConf.to_object(patterns) if OmegaConf.is_config(patterns) else patterns
    return _training_exposure((patterns,) if isinstance(patterns, str) else tuple(patterns))


@functools.cache
def _training_exposure(patterns: tuple[str, ...]) -> TrainingExposure:
    names: set[str] = set()
    counts: Counter[tuple[str, str]] = Counter()
    for record in iter_records(list(patterns)):
        names.update((record.get("context") or {}).get("entities") or [])
        lang = str(record.get("lang") or "en")
        counts.update((lang, unit) for unit in scoring_units(record["text"], lang))
    return TrainingExposure(frozenset(names), counts)


def evaluate(cfg: DictConfig, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Decode every usable utterance of the chosen shards and score it; name and count the others.

    Args:
        cfg: a composed ``conf/eval.yaml``.
        loaded: a model already in memory to evaluate (default: ``cfg.ckpt`` loaded).

    Returns:
        The metrics written to ``results.json`` (with ``num_skipped`` and ``num_skipped/<reason>``).
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    loaded = loaded or load_speech_llm(cfg.ckpt, device, checkpoint=cfg.checkpoint)
    shards = cfg.shards or cfg.data[f"{cfg.split}_shards"]
    mode = context_mode(cfg)
    prompt_contexts = _PromptContexts(mode, shards, int(cfg.get("context_seed", 0)))
    decoding = DecodingConfig(**cfg.decoding, use_context=mode != "none")
    heard = training_exposure(cfg.heard_from) if cfg.get("heard_from") else None
    acc = WERAccumulator(
        group_by=("domain", "speaker"),
        heard_names=heard and heard.names,
        train_unit_counts=heard and heard.unit_counts,
    )
    hallucinated = 0
    skipped: list[dict[str, str]] = []
    partial = {name: out / f".{name}.partial" for name in ("hyps.jsonl", "results.json")}
    with partial["hyps.jsonl"].open("w", encoding="utf-8") as hyp_file:
        for batch in eval_batches(cfg, loaded, shards, device, skipped):
            contexts = prompt_contexts(batch["keys"], batch["metas"])
            hyps = transcripts(loaded.model, batch, decoding, contexts)
            rows = zip(batch["keys"], hyps, batch["texts"], batch["metas"], contexts, strict=True)
            for key, hyp, ref, meta, context in rows:
                keywords = (meta.get("context") or {}).get("keywords", ())
                acc.update(hyp, ref, meta, keywords=keywords)
                shown = (context or {}).get("keywords") or ()
                hallucinated += hallucinated_keywords(hyp, ref, shown, str(meta.get("lang") or "en"))
                record = {k: meta.get(k) for k in ("lang", "domain", "speaker")}
                line = {"key": key, **record, "ref": ref, "hyp": hyp, "prompt_keywords": list(shown)}
                hyp_file.write(json.dumps(line, ensure_ascii=False) + "\n")
    metrics = acc.compute()
    metrics["hallucinated_keywords"] = hallucinated
    metrics["hallucinated_keywords_per_utt"] = hallucinated / max(int(metrics["num_utts"]), 1)
    metrics["num_skipped"] = len(skipped)
    reasons = Counter(item["reason"] for item in skipped)
    metrics.update({f"num_skipped/{reason}": count for reason, count in sorted(reasons.items())})
    results = {
        "ckpt": str(cfg.ckpt),
        "checkpoint": str(loaded.source),
        "shards": OmegaConf.to_object(shards) if OmegaConf.is_config(shards) else shards,
        "decoding": OmegaConf.to_container(cfg.decoding),
        "use_context": cfg.use_context,
        "context_mode": mode,
        "metrics": metrics,
        "skipped": skipped,
    }
    partial["results.json"].write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    for name, path in partial.items():
        os.replace(path, out / name)
    log.info("WER %.4f on %d utterances (%d skipped: %s) -> %s", metrics["wer"], metrics["num_utts"],
             len(skipped), dict(reasons) or "none", out / "results.json")
    return metrics


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
