"""``seed-asr eval ckpt=<run or checkpoint> [split=test] [shards=...]``: WER/CER of a checkpoint.

Writes ``results.json`` (overall, per language, domain and speaker, counts, the normaliser) and
``hyps.jsonl`` (one line per utterance) into the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seed_asr.data.cmvn import CmvnStats, save_cmvn
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.inference import load_speech_llm, pick_device
from seed_asr.metrics.wer import WERAccumulator

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Decode every utterance of the chosen shards and score it.

    Returns:
        The metrics written to ``results.json``.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    loaded = load_speech_llm(cfg.ckpt, device)
    # the CMVN the model was trained with, whatever the data config says
    cmvn = loaded.features.cmvn
    cmvn_path = save_cmvn(CmvnStats(cmvn.mean.cpu(), 1.0 / cmvn.inv_std.cpu(), 0, 0), out / "cmvn.json")
    shards = cfg.shards or cfg.data[f"{cfg.split}_shards"]
    datamodule = instantiate(cfg.data, test_shards=shards, cmvn_path=str(cmvn_path), output_dir=str(out))
    datamodule.setup("test")
    decoding = DecodingConfig(**cfg.decoding, use_context=cfg.use_context)
    acc = WERAccumulator(group_by=("domain", "speaker"))
    with (out / "hyps.jsonl").open("w", encoding="utf-8") as hyp_file:
        for batch in datamodule.test_dataloader():
            batch = datamodule.on_after_batch_transfer(
                {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}, 0
            )
            for hyp, ref, meta in zip(
                transcripts(loaded.model, batch, decoding), batch["texts"], batch["metas"], strict=True
            ):
                keywords = (meta.get("context") or {}).get("keywords", ())
                acc.update(hyp, ref, meta, keywords=keywords)
                record = {k: meta.get(k) for k in ("__key__", "lang", "domain", "speaker")}
                hyp_file.write(json.dumps({**record, "ref": ref, "hyp": hyp}, ensure_ascii=False) + "\n")
    metrics = acc.compute()
    results = {
        "ckpt": str(cfg.ckpt),
        "shards": OmegaConf.to_object(shards) if OmegaConf.is_config(shards) else shards,
        "decoding": OmegaConf.to_container(cfg.decoding),
        "use_context": cfg.use_context,
        "metrics": metrics,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    log.info("WER %.4f on %d utterances -> %s", metrics["wer"], metrics["num_utts"], out / "results.json")
    return metrics


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
