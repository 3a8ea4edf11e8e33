"""The settings a demo folder's results were made with (``<out_dir>/demo_config.yaml``).

A demo skips every step whose result exists, so a second invocation with other settings (more SFT steps,
another corpus size, a profile) would silently mix results of both. The first invocation records its
resolved config; a later one with other settings fails before any work and names what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SETTINGS_FILE = "demo_config.yaml"
_WHERE_NOT_COMPARED = ("out_dir",)  # the same results read from a moved or copied folder


class SettingsChanged(ValueError):
    """The demo folder's results were made with other settings."""


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of nested dicts (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        leaves |= _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return leaves


def hold_settings(out: Path, cfg: DictConfig) -> None:
    """Record ``cfg`` in ``out`` on a demo's first invocation; on later ones check it is unchanged.

    Raises:
        SettingsChanged: ``out`` holds results made with other settings; the message lists each
            differing key with its recorded and its new value.
    """
    path = out / SETTINGS_FILE
    resolved = OmegaConf.to_container(cfg, resolve=True)
    settings = {k: v for k, v in resolved.items() if k not in _WHERE_NOT_COMPARED}
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(settings))
        return
    recorded = _leaves(OmegaConf.to_container(OmegaConf.load(path)))
    new = _leaves(settings)
    changed = [f"{k}: {recorded.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
               for k in sorted(recorded.keys() | new.keys()) if recorded.get(k) != new.get(k)]
    if changed:
        raise SettingsChanged(
            f"{out} holds demo results made with other settings ({path}):\n  " + "\n  ".join(changed)
            + "\nResume with the recorded settings, or give another out_dir; to keep its finished runs "
            f"as they are under the new settings, remove {SETTINGS_FILE} and the folders of the runs to redo."
        )
