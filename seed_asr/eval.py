"""``seed-asr eval ckpt=<run or checkpoint> [checkpoint=best] [split=test] [shards=...]``: WER/CER of a
checkpoint.

Writes ``results.json`` (overall, per language, domain and speaker, counts, the normaliser, the checkpoint
file that was read) and ``hyps.jsonl`` (one line per utterance) into the run folder.

Contexts (``context_mode``): ``none``; ``relevant`` (each utterance's own context from the shard);
``irrelevant`` (the context of an utterance of another dialogue of the same set, without the words of
this utterance, deterministic from ``context_seed``: see `seed_asr.data.contexts.irrelevant_contexts`).
Keyword metrics (B-WER, U-WER, recall) always use the utterance's own hot-word list;
``hallucinated_keywords`` counts hot words OF THE PROMPT that the hypothesis has more often than the
reference.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seed_asr.artifacts.loading import load_speech_llm, pick_device
from seed_asr.data.cmvn import CmvnStats, save_cmvn
from seed_asr.data.contexts import irrelevant_contexts
from seed_asr.data.records import iter_records
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.metrics.wer import WERAccumulator, hallucinated_keywords

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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Decode every utterance of the chosen shards and score it.

    Returns:
        The metrics written to ``results.json``.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    loaded = load_speech_llm(cfg.ckpt, device, checkpoint=cfg.checkpoint)
    # the CMVN the model was trained with, whatever the data config says
    cmvn = loaded.features.cmvn
    cmvn_path = save_cmvn(CmvnStats(cmvn.mean.cpu(), 1.0 / cmvn.inv_std.cpu(), 0, 0), out / "cmvn.json")
    shards = cfg.shards or cfg.data[f"{cfg.split}_shards"]
    datamodule = instantiate(cfg.data, test_shards=shards, cmvn_path=str(cmvn_path), output_dir=str(out))
    datamodule.setup("test")
    mode = context_mode(cfg)
    prompt_contexts = _PromptContexts(mode, shards, int(cfg.get("context_seed", 0)))
    decoding = DecodingConfig(**cfg.decoding, use_context=mode != "none")
    acc = WERAccumulator(group_by=("domain", "speaker"))
    hallucinated = 0
    with (out / "hyps.jsonl").open("w", encoding="utf-8") as hyp_file:
        for batch in datamodule.test_dataloader():
            batch = datamodule.on_after_batch_transfer(
                {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}, 0
            )
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
    results = {
        "ckpt": str(cfg.ckpt),
        "checkpoint": str(loaded.source),
        "shards": OmegaConf.to_object(shards) if OmegaConf.is_config(shards) else shards,
        "decoding": OmegaConf.to_container(cfg.decoding),
        "use_context": cfg.use_context,
        "context_mode": mode,
        "metrics": metrics,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    log.info("WER %.4f on %d utterances -> %s", metrics["wer"], metrics["num_utts"], out / "results.json")
    return metrics


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
