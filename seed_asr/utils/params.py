"""Freezing by regex, parameter counts, and weight initialisation from earlier stages."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

log = logging.getLogger(__name__)


def freeze_by_regex(module: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name matches any pattern (``re.search``).

    Warns for every pattern that matches nothing (a typo would otherwise silently train too much).

    Returns:
        Names of the frozen parameters.
    """
    compiled = {p: re.compile(p) for p in patterns}
    hits = dict.fromkeys(patterns, 0)
    frozen = []
    for name, param in module.named_parameters():
        for pat, rx in compiled.items():
            if rx.search(name):
                param.requires_grad_(False)
                hits[pat] += 1
                frozen.append(name)
                break
    for pat, n in hits.items():
        if n == 0:
            log.warning("freeze pattern %r matches no parameter", pat)
    return frozen


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def load_state_from_checkpoint(path: str | Path) -> dict:
    """Load a Lightning checkpoint (or a plain state dict) safely with ``weights_only=True``.

    Raises:
        FileNotFoundError: the path does not exist (named in the message).
    """
    path = Path(path)
    if path.is_dir():  # a run folder: take its last checkpoint
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise FileNotFoundError(f"init_from checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def init_from_checkpoint(
    module: nn.Module, path: str | Path, include: Sequence[str] = (".*",), strict_shapes: bool = True
) -> list[str]:
    """Copy the weights of an earlier stage's checkpoint into ``module``.

    Args:
        module: the model to initialise (its state-dict names are matched against the checkpoint's).
        path: checkpoint file, or a run folder holding ``checkpoints/last.ckpt``.
        include: regexes; only matching parameter names are copied (e.g. ``["^encoder\\."]``).
        strict_shapes: raise when a matched tensor has another shape (instead of skipping it).

    Returns:
        Names of the loaded tensors.
    """
    ckpt = load_state_from_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("model."): v for k, v in state.items()}
    own = module.state_dict()
    rxs = [re.compile(p) for p in include]
    loaded = {}
    for name, tensor in state.items():
        if name not in own or not any(rx.search(name) for rx in rxs):
            continue
        if own[name].shape != tensor.shape:
            shapes = f"{tuple(tensor.shape)}, model wants {tuple(own[name].shape)}"
            msg = f"init_from {path}: {name} has shape {shapes}"
            if strict_shapes:
                raise ValueError(msg)
            log.warning(msg)
            continue
        loaded[name] = tensor
    if not loaded:
        raise ValueError(f"init_from {path}: no tensor matches the model and patterns {list(include)}")
    module.load_state_dict(loaded, strict=False)
    log.info("initialised %d tensors from %s", len(loaded), path)
    return sorted(loaded)


def init_sources(init_from: Any) -> list[dict[str, Any]]:
    """Normalise ``init_from`` (None, a path, or a list of paths / {path, include}) to a list of dicts."""
    if not init_from:
        return []
    items = init_from if isinstance(init_from, (list, tuple)) or OmegaConf.is_list(init_from) else [init_from]
    return [{"path": it} if isinstance(it, str) else dict(it) for it in items]
