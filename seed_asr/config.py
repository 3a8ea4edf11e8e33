"""The project's Hydra configs: where they live and how to compose one outside ``@hydra.main``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, open_dict

#: ``conf/``, shipped inside the package (``seed_asr/conf`` links to the repository's top-level folder).
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(
    name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> DictConfig:
    """The config ``name`` (``train``, ``eval``, ...) with command-line style ``overrides``.

    Works anywhere, also inside a running Hydra app (the demo): Hydra's global state is set aside while
    composing and restored after. ``output_dir``: sets ``paths.output_dir``.
    """
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=name):
            cfg = compose(config_name=name, overrides=list(overrides))
    finally:
        restore_gh_from_backup(backup)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
