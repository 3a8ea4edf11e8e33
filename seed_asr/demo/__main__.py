"""``seed-asr demo`` / ``python -m seed_asr.demo``: the Hydra entry point of :func:`run_demo`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from seed_asr.demo.pipeline import run_demo
from seed_asr.demo.runs import sigterm_as_exit


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (a SIGTERM stops the running step with the demo: `sigterm_as_exit`)."""
    with sigterm_as_exit():
        run_demo(cfg)


if __name__ == "__main__":
    main()
