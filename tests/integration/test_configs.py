"""Every shipped YAML composes, and what it names instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from seed_asr.train import _instantiate_dict

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOT_CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "train")
# groups whose options are composed into `train`; each option must compose and instantiate
# (`profile` belongs to the demo's config: tests/unit/test_demo_report.py composes it)
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra", "quant", "profile"})


def compose_train(overrides: list[str], output_dir: Path) -> OmegaConf:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"{group}={option}"], tmp_path)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if group in {"logger", "callbacks"}:
        assert _instantiate_dict(cfg[group]) or not cfg[group]
    elif group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("trainer=gpu needs a GPU to instantiate")
    elif group in {"trainer", "strategy", "data"} and "_target_" in cfg[group]:
        assert instantiate(cfg[group]) is not None
    elif group == "stage":
        assert cfg.stage.name and "_target_" in cfg.stage.module


@pytest.mark.parametrize("name", ROOT_CONFIGS)
def test_root_config_composes(name: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name)
    assert cfg
