"""``seed-asr shards [overrides]``: convert a JSONL manifest or a LibriSpeech folder into shards
(``conf/shards.yaml``)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from seed_asr.data.cmvn import write_split_cmvn
from seed_asr.data.shards import ConversionSummary, convert_librispeech, convert_manifest

log = logging.getLogger(__name__)
FORMATS = {"manifest": convert_manifest, "librispeech": convert_librispeech}


def convert(cfg: DictConfig) -> ConversionSummary:
    """Run the conversion that ``cfg.format`` names."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {cfg.format!r}")
    return FORMATS[cfg.format](
        cfg.input, cfg.out_dir, split=cfg.split, shard_size=cfg.shard_size, lang=cfg.lang,
        domain=cfg.domain or cfg.format, num_workers=cfg.num_workers, overwrite=cfg.overwrite,
    )


@hydra.main(config_path="conf", config_name="shards", version_base="1.3")
def main(cfg: DictConfig) -> ConversionSummary:
    """Convert; a converted train split also gets its ``cmvn.json`` (fbank statistics) in ``out_dir``."""
    summary = convert(cfg)
    if cfg.split == "train" and cfg.cmvn_utterances > 0:
        log.info("CMVN statistics: %s", write_split_cmvn(cfg.out_dir, cfg.cmvn_utterances))
    return summary


if __name__ == "__main__":
    main()
