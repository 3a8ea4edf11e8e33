"""What to quantize in a speech LLM and how: a validated ``QuantSpec`` built from a ``conf/quant`` node."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from decoupleq import QuantConfig

PARTS = ("encoder", "converter", "llm")
_SPEC_KEYS = {"name", "config", "parts", "include", "exclude", "order", "calib_batches"}


@dataclass(frozen=True)
class QuantSpec:
    """A named quantization recipe for a ``SpeechLLM``.

    Attributes:
        name: Short name used in metric keys and folders (``val_<name>/wer``, ``quantized/<name>``).
        config: The decoupleQ settings (bits, group size, method, block-wise refinement, ...).
        parts: Which parts are quantized, in model order: "encoder" (its Conformer blocks),
            "converter", "llm" (its decoder layers). Embeddings, lm_head, the CTC head and the
            encoder's subsampling are never inside these blocks: they stay in full precision.
        include: Regexes over full linear names (e.g. ``llm.model.layers.0.mlp.up_proj``); empty: all.
        exclude: Regexes of linears kept in full precision.
        order: Groups of name regexes quantized one after another within a block (sequential
            calibration); empty: all of a block's linears from one pass (parallel).
        calib_batches: Training batches used for calibration; 0 for a method that needs none (plain
            ``rtn``, `decoupleq.QuantConfig.needs_calibration`): no data read, no forward pass.
    """

    name: str
    config: QuantConfig
    parts: tuple[str, ...] = PARTS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    order: tuple[tuple[str, ...], ...] = ()
    calib_batches: int = 8

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ValueError(f"quant.name must be a non-empty [A-Za-z0-9_.-] string, got {self.name!r}")
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(f"quant.parts must be a non-empty subset of {list(PARTS)}, "
                             f"got {list(self.parts)}")
        if not isinstance(self.calib_batches, int) or isinstance(self.calib_batches, bool) \
                or self.calib_batches < 0:
            raise ValueError(f"quant.calib_batches must be an int >= 0, got {self.calib_batches!r}")
        if self.calib_batches == 0:
            self.config.check_data_free("quant.calib_batches=0")
        for key, patterns in (("include", self.include), ("exclude", self.exclude),
                              ("order", [p for group in self.order for p in group])):
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"quant.{key}: invalid regex {pattern!r}: {err}") from err

    @classmethod
    def from_cfg(cls, cfg: DictConfig | Mapping[str, Any], method: str | None = None,
                 blockwise: bool | None = None) -> QuantSpec:
        """Build from a ``conf/quant`` node, with another ``method`` / ``blockwise`` switch when given
        (None keeps the node's); unknown keys and bad values raise ValueError naming them."""
        data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        unknown = sorted(set(data) - _SPEC_KEYS)
        if unknown:
            raise ValueError(f"quant: unknown keys {unknown}; expected {sorted(_SPEC_KEYS)}")
        overrides = {k: v for k, v in (("method", method), ("blockwise", blockwise)) if v is not None}
        return cls(
            name=data.get("name", ""),
            config=QuantConfig.from_dict({**(data.get("config") or {}), **overrides}),
            parts=tuple(data.get("parts") or PARTS),
            include=tuple(data.get("include") or ()),
            exclude=tuple(data.get("exclude") or ()),
            order=tuple(tuple(group) for group in data.get("order") or ()),
            calib_batches=data.get("calib_batches", 8),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, the inverse of ``from_cfg``."""
        return {"name": self.name, "config": self.config.to_dict(), "parts": list(self.parts),
                "include": list(self.include), "exclude": list(self.exclude),
                "order": [list(g) for g in self.order], "calib_batches": self.calib_batches}


def spec_from_any(spec: QuantSpec | DictConfig | Mapping[str, Any]) -> QuantSpec:
    """Accept a ready ``QuantSpec`` or a config node."""
    return spec if isinstance(spec, QuantSpec) else QuantSpec.from_cfg(spec)

