"""Reading every kind of checkpoint a run leaves, as one Lightning-shaped dict.

Kinds: a Lightning checkpoint file; a DeepSpeed ZeRO checkpoint folder (any stage, any world size,
consolidated to fp32 by DeepSpeed's ``zero_to_fp32``); an export folder of ``seed-asr export``; a run
folder (one of its checkpoints, ``resolve_checkpoint``). Every reader returns ``{"state_dict":
{"model.<name>": tensor}, "hyper_parameters": {"cfg": ...}, "tokenizer_files": ..., "cmvn": ...}`` (the
last three when present).

A run folder holds two checkpoints (written by ``conf/callbacks/default.yaml``): ``checkpoints/last.ckpt``,
the state after the run's last optimizer step (what ``ckpt_path=last`` resumes, ``resume_checkpoint``),
and ``checkpoints/best.ckpt``, the state at the validation with the best ``stage.monitor``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from seed_asr.utils.atomic_checkpoint import find_checkpoint

log = logging.getLogger(__name__)
_warn = rank_zero_only(log.warning)
_info = rank_zero_only(log.info)

TOKENIZER_KEY = "tokenizer_files"
CMVN_KEY = "cmvn"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.yaml"
EXPORT_TOKENIZER = "tokenizer"
EXPORT_CMVN = "cmvn.json"
# Modules that moved: checkpoints written before name their classes (``_target_``) by the old path.
MOVED_MODULES = {
    "seed_asr.data.prompts": "seed_asr.text.prompts",
    "seed_asr.data.text": "seed_asr.text.tokenizer",
    "seed_asr.data.phonemes": "seed_asr.text.phonemes",
    "seed_asr.data.fixed": "seed_asr.testing.fixed",
    "seed_asr.data.synthetic": "seed_asr.testing.synthetic",
}
RUN_CHECKPOINTS = ("last", "best")
CHECKPOINT_HELP = "which checkpoint of a run folder: last (the final state) or best (the best stage.monitor)"
# Lightning wraps the LightningModule before handing it to DeepSpeed
_DEEPSPEED_PREFIX = "_forward_module."


def is_export_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``seed-asr export``."""
    return (path / EXPORT_WEIGHTS).is_file() and (path / EXPORT_CONFIG).is_file()


def is_zero_folder(path: Path) -> bool:
    """Whether ``path`` is a DeepSpeed checkpoint folder (as Lightning writes ``*.ckpt`` with DeepSpeed)."""
    return path.is_dir() and any(path.glob("*/*model_states.pt"))


def _safe_load(path: Path, allowed: Sequence[type] = (), mmap: bool = False) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises UnpicklingError or RuntimeError for disallowed objects
        raise ValueError(f"{path} does not load with torch.load(weights_only=True): {err}") from err


def read_export_folder(path: Path) -> dict[str, Any]:
    """An export folder as a Lightning-shaped dict."""
    state: dict[str, Any] = {
        "state_dict": {f"model.{k}": v for k, v in load_file(path / EXPORT_WEIGHTS).items()},
        "hyper_parameters": {"cfg": OmegaConf.to_container(OmegaConf.load(path / EXPORT_CONFIG))},
    }
    tokenizer = path / EXPORT_TOKENIZER
    if tokenizer.is_dir():
        state[TOKENIZER_KEY] = {
            f.name: f.read_text(encoding="utf-8") for f in tokenizer.iterdir() if f.is_file()
        }
    if (path / EXPORT_CMVN).is_file():
        state[CMVN_KEY] = json.loads((path / EXPORT_CMVN).read_text())
    return state


def read_zero_folder(path: Path) -> dict[str, Any]:
    """A DeepSpeed ZeRO checkpoint folder as a Lightning-shaped dict with fp32 weights.

    Every file is first loaded with ``weights_only=True`` (so a folder holding arbitrary pickled objects
    is refused) before DeepSpeed's own consolidation, which reads its files with full unpickling.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    files = sorted(path.glob("*/*.pt"))
    client = None
    for f in files:
        loaded = _safe_load(f, allowed=_deepspeed_types())
        if f.name.endswith("model_states.pt") and (client is None or f.name.startswith("mp_rank_00")):
            client = loaded
        del loaded
    weights = get_fp32_state_dict_from_zero_checkpoint(str(path))
    state = {k: v for k, v in client.items() if k not in {"module", "optimizer", "lr_scheduler"}}
    state["state_dict"] = {k.removeprefix(_DEEPSPEED_PREFIX): v for k, v in weights.items()}
    return state


def _deepspeed_types() -> tuple[type, ...]:
    """What DeepSpeed stores beside the tensors: its ZeRO stage (an IntEnum) and loss-scaler settings."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    return ZeroStageEnum, LossScaler


def checkpoint_step(path: Path) -> int:
    """The global step a Lightning checkpoint (a file, or a DeepSpeed folder) was saved at; its tensors are
    mapped, not read.

    Raises:
        ValueError: it does not load (truncated, not a checkpoint, no ``global_step``).
    """
    if path.is_dir():
        states = sorted(path.glob("*/mp_rank_00_model_states.pt"))
        if not states:
            raise ValueError(f"{path} holds no DeepSpeed mp_rank_00_model_states.pt")
        state = _safe_load(states[0], allowed=_deepspeed_types(), mmap=True)
    else:
        state = _safe_load(path, mmap=True)
    if not isinstance(state, dict) or "global_step" not in state:
        raise ValueError(f"{path} is not a Lightning checkpoint (no global_step)")
    return int(state["global_step"])


def resume_checkpoint(run: str | Path) -> Path | None:
    """The checkpoint ``ckpt_path=last`` resumes in run folder ``run``: ``checkpoints/last.ckpt``
    (``run_checkpoint``) when it loads, else the loadable checkpoint of ``checkpoints/`` with the highest
    global step (the latest written among equals), with a warning naming and counting the checkpoints
    passed over; None (a fresh start) when the folder holds no checkpoint.

    Raises:
        ValueError: the folder holds checkpoints and none loads (each named with its error).
    """
    last = run_checkpoint(run, "last")
    folder = last.parent
    found = sorted(
        p for p in (folder.iterdir() if folder.is_dir() else ())
        if p.name.endswith((".ckpt", ".ckpt.old")) and not p.name.startswith(".")
    )
    if not found:
        _info("ckpt_path=last but %s holds no checkpoint: starting from scratch", folder)
        return None
    steps: dict[Path, int] = {}
    errors: dict[Path, str] = {}
    for path in sorted(found, key=lambda p: p != last):  # last.ckpt first: the others only without it
        try:
            steps[path] = checkpoint_step(path)
        except ValueError as err:
            errors[path] = str(err).splitlines()[0]
        if path == last and path in steps:
            return last
    passed_over = "; ".join(f"{p.name}: {e}" for p, e in sorted(errors.items()))
    if not steps:
        raise ValueError(f"ckpt_path=last: none of the {len(errors)} checkpoints in {folder} loads: "
                         f"{passed_over}")
    chosen = max(steps, key=lambda p: (steps[p], p.stat().st_mtime))
    _warn("ckpt_path=last: %s %s; resuming from %s (global step %d), the newest of %d readable checkpoints; "
          "%d unreadable passed over: %s", last, "does not load" if last in errors else "is missing", chosen,
          steps[chosen], len(steps), len(errors), passed_over)
    return chosen


def run_checkpoint(run: str | Path, which: str = "last") -> Path:
    """The path of a run folder's checkpoint ``which`` (``"last"`` or ``"best"``, see the module docstring):
    ``<run>/checkpoints/<which>.ckpt``, or the ``.old`` DeepSpeed folder a kill inside its replacement left.

    Raises:
        ValueError: ``which`` is not one of ``RUN_CHECKPOINTS``.
    """
    if which not in RUN_CHECKPOINTS:
        raise ValueError(f"a run folder's checkpoint is one of {RUN_CHECKPOINTS}, got {which!r}")
    path = Path(run) / "checkpoints" / f"{which}.ckpt"
    return find_checkpoint(path) or path


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """``path`` itself, or for a run folder (a folder that is neither an export nor a ZeRO checkpoint) its
    checkpoint ``which`` (``run_checkpoint``). Every reader of a run folder goes through here."""
    path = Path(path)
    if path.is_dir() and not is_export_folder(path) and not is_zero_folder(path):
        return run_checkpoint(path, which)
    return path


def load_state_from_checkpoint(path: str | Path, which: str = "last") -> dict[str, Any]:
    """Load any checkpoint kind (see the module docstring) safely.

    Args:
        path: a checkpoint file or folder, an export folder, or a run folder.
        which: the checkpoint of a run folder: ``"last"`` or ``"best"`` (``run_checkpoint``).

    Raises:
        FileNotFoundError: the path does not exist (named in the message).
        ValueError: a file holds more than tensors and plain containers, or ``which`` is unknown.
    """
    path = resolve_checkpoint(path, which)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if is_export_folder(path):
        return read_export_folder(path)
    if is_zero_folder(path):
        return read_zero_folder(path)
    return _safe_load(path)


def stored_config(raw: Any) -> DictConfig:
    """The run config a checkpoint stored (``hyper_parameters.cfg``, or a quantized folder's ``cfg``),
    read as the current code reads configs: the ``_target_`` of every class whose module moved
    (``MOVED_MODULES``) renamed to its home, and a prompt stored before chat templates were read
    (no ``chat_template`` key) kept on its own template."""

    def renamed(node: Any) -> Any:
        if isinstance(node, list):
            return [renamed(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: renamed(value) for key, value in node.items()}
        module, _, name = str(out.get("_target_", "")).rpartition(".")
        if module in MOVED_MODULES:
            out["_target_"] = f"{MOVED_MODULES[module]}.{name}"
        return out

    cfg = OmegaConf.create(renamed(OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else raw))
    prompt = OmegaConf.select(cfg, "model.prompt")
    if prompt is not None and "chat_template" not in prompt:
        prompt.chat_template = "never"
    return cfg
