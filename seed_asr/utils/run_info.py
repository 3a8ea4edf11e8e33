"""What a run records about itself: resolved config, git commit, versions, hardware, each start."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

PACKAGES = ("torch", "lightning", "deepspeed", "transformers", "triton", "webdataset", "hydra-core", "wandb")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the checkout the code runs from (``None`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment_info(world_size: int = 1) -> dict[str, Any]:
    """Versions of the main packages, Python, world size and accelerator names."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "host": platform.node(),
        "versions": versions,
        "world_size": world_size,
        "gpus": gpus,
        "git_commit": git_commit(),
    }


RUN_CONFIG = "config.yaml"
RUN_INFO = "run_info.json"
STARTS = "starts.jsonl"


@rank_zero_only
def save_run_files(
    cfg: DictConfig, output_dir: str | Path, info: dict[str, Any], resumed_from: str | None = None
) -> None:
    """Record a start of the run in its folder (rank zero only).

    Every start appends ``{"started", "resumed_from", "run_info", "config"}`` (the resolved config) as one
    line of ``starts.jsonl``. A start that resumes no checkpoint (a new run) also writes ``config.yaml``
    and ``run_info.json``; a resume keeps them, also when it fails (a resume with another stage).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    record = {"started": datetime.now().isoformat(timespec="seconds"), "resumed_from": resumed_from,
              "run_info": info, "config": config}
    with (out / STARTS).open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    if resumed_from is None or not (out / RUN_CONFIG).exists():
        OmegaConf.save(config, out / RUN_CONFIG)
        (out / RUN_INFO).write_text(json.dumps(info, indent=2))


WANDB_DIRS = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache", "WANDB_ARTIFACT_DIR": "artifacts"}
_wandb_dirs_set: dict[str, str] = {}  # what keep_wandb_files_in last set, to tell it from the user's


def keep_wandb_files_in(output_dir: str | Path) -> None:
    """Point wandb's staging, cache and artifact folders (home-directory defaults) into the run folder,
    unless the user set them: a run writes nothing outside its folder (also the second of two runs in
    one process)."""
    for name, sub in WANDB_DIRS.items():
        if os.environ.get(name) in (None, _wandb_dirs_set.get(name)):
            os.environ[name] = _wandb_dirs_set[name] = str(Path(output_dir) / "wandb" / sub)
