"""Freezing by regex, parameter counts, and weight initialisation from earlier stages."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seed_asr.utils.checkpoints import load_state_from_checkpoint

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


def is_zero3_partitioned(param: nn.Parameter) -> bool:
    """Whether DeepSpeed ZeRO-3 has partitioned ``param`` (its data then lives in ``param.ds_tensor``)."""
    return hasattr(param, "ds_id")


def _numel(param: nn.Parameter) -> int:
    return param.ds_numel if is_zero3_partitioned(param) else param.numel()


def _local_numel(param: nn.Parameter) -> int:
    return param.ds_tensor.numel() if is_zero3_partitioned(param) else param.numel()


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts, and how many elements this process holds (``local``:
    the total, except under ZeRO-3 where each rank holds its partition)."""
    params = list(module.parameters())
    return {
        "trainable": sum(_numel(p) for p in params if p.requires_grad),
        "total": sum(_numel(p) for p in params),
        "local": sum(_local_numel(p) for p in params),
    }


def init_from_checkpoint(
    module: nn.Module,
    path: str | Path,
    include: Sequence[str] = (".*",),
    strict_shapes: bool = True,
    checkpoint: str = "last",
) -> list[str]:
    """Copy the weights of an earlier stage's checkpoint into ``module``.

    Args:
        module: the model to initialise (its state-dict names are matched against the checkpoint's).
        path: checkpoint file or folder, export folder, or run folder.
        include: regexes; only matching parameter names are copied (e.g. ``["^encoder\\."]``).
        strict_shapes: raise when a matched tensor has another shape (instead of skipping it).
        checkpoint: which checkpoint of a run folder: ``"last"`` or ``"best"``.

    Returns:
        Names of the loaded tensors.
    """
    ckpt = load_state_from_checkpoint(path, checkpoint)
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("model."): v for k, v in state.items()}
    own = module.state_dict()
    params = dict(module.named_parameters(remove_duplicate=False))  # tied weights under every name
    rxs = [re.compile(p) for p in include]
    loaded = {}
    for name, tensor in state.items():
        if name not in own or not any(rx.search(name) for rx in rxs):
            continue
        own_shape = params[name].ds_shape if name in params and is_zero3_partitioned(params[name]) else None
        own_shape = tuple(own_shape or own[name].shape)
        if own_shape != tuple(tensor.shape):
            shapes = f"{tuple(tensor.shape)}, model wants {own_shape}"
            msg = f"init_from {path}: {name} has shape {shapes}"
            if strict_shapes:
                raise ValueError(msg)
            log.warning(msg)
            continue
        loaded[name] = tensor
    if not loaded:
        raise ValueError(f"init_from {path}: no tensor matches the model and patterns {list(include)}")
    partitioned = {n: p for n, p in params.items() if n in loaded and is_zero3_partitioned(p)}
    if partitioned:
        _load_partitioned(module, loaded, partitioned)
    else:
        module.load_state_dict(loaded, strict=False)
    log.info("initialised %d tensors from %s", len(loaded), path)
    return sorted(loaded)


def _load_partitioned(
    module: nn.Module, state: dict[str, torch.Tensor], params: dict[str, nn.Parameter]
) -> None:
    """``load_state_dict`` for a ZeRO-3 model built inside ``deepspeed.zero.Init``: each parameter is
    gathered alone, overwritten on rank 0 and re-partitioned, so the full model is never materialised.
    A tied parameter (several names) is written once."""
    import deepspeed  # only ZeRO-3 runs get here

    done: set[int] = set()
    for name, param in params.items():
        if id(param) in done:
            continue
        done.add(id(param))
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
            param.copy_(state[name])
    buffers = {n: t for n, t in state.items() if n not in params}
    if buffers:
        module.load_state_dict(buffers, strict=False)


def init_sources(stage: DictConfig) -> list[dict[str, Any]]:
    """A stage's ``init_from`` (None, a path, or a list of paths / {path, include, checkpoint}) as a list
    of ``{path, checkpoint[, include]}`` dicts; an entry without ``checkpoint`` takes
    ``stage.init_checkpoint``."""
    init_from = stage.init_from
    if not init_from:
        return []
    items = init_from if isinstance(init_from, (list, tuple)) or OmegaConf.is_list(init_from) else [init_from]
    default = {"checkpoint": stage.init_checkpoint}
    return [{**default, **({"path": it} if isinstance(it, str) else dict(it))} for it in items]
