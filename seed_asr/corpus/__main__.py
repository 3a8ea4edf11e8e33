"""``seed-asr corpus [overrides]``: build the built-in synthetic speech corpus (``conf/corpus.yaml``)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from seed_asr.corpus.build import build_corpus
from seed_asr.data.cmvn import write_split_cmvn

log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="corpus", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Build the corpus of ``cfg`` (+ the train split's ``cmvn.json``); log its size per split."""
    options = OmegaConf.to_container(cfg, resolve=True)
    cmvn_utterances = options.pop("cmvn_utterances")
    stats = build_corpus(**options)
    log.info("CMVN statistics: %s", write_split_cmvn(cfg.out_dir, cmvn_utterances))
    for split, numbers in stats["splits"].items():
        log.info("%s: %d utterances, %d dialogues, %.3f h, %d shards", split, numbers["utterances"],
                 numbers["dialogues"], numbers["hours"], numbers["shards"])


if __name__ == "__main__":
    main()
