"""Settings of a quantization run: one frozen, validated dataclass shared by every part of decoupleq."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

_BITS = (2, 3, 4, 8)
_METHODS = ("decoupleq", "gptq", "rtn", "rtn_clip")
_INTEGER_STEPS = ("gptq", "pgd")
_SCALE_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize the linear layers of a model.

    Attributes:
        bits: Width of the signed integer codes q in [-2^(bits-1), 2^(bits-1) - 1].
        group_size: Input columns sharing one (scale, zero); -1 means one pair per output row.
        symmetric: Force zero = 0 (W_hat = scale * q).
        method: "decoupleq" (alternating integer/float optimisation), or a baseline: "gptq" (the
            IST-DASLab reference), "rtn" (round-to-nearest on min/max) or "rtn_clip" (round-to-nearest
            with the H-weighted clip search).
        integer_step: How decoupleQ rounds with (scale, zero) fixed: "gptq" (error feedback) or "pgd".
        max_iter: Alternating iterations of decoupleQ (integer step + float step).
        early_stop_frac: Stop once fewer than this fraction of rows improve in an iteration.
        damping: Fraction of mean(diag H) added to diag H before factorising it.
        max_damping: Largest damping fraction tried when the Cholesky factorisation keeps failing.
        clip_search: Search a clipping ratio for decoupleQ's min/max initialisation (H-weighted error).
        clip_grid: Ratios of the [min, max] range tried by the clip search (decoupleQ, "rtn_clip").
        act_order: Round columns in descending diag(H) order (GPTQ and decoupleQ's GPTQ step).
        static_groups: GPTQ fixes every group's grid from the weights before its rounding loop (the
            reference's static groups); False fits a group's grid when the loop reaches it.
        gptq_block: Columns processed together by the GPTQ error-feedback loop (lazy batch updates).
        pgd_steps: Adam steps of the projected-gradient integer step.
        pgd_lr: Adam learning rate of the projected-gradient integer step (in code units).
        row_chunk: Rows solved together by the float step (bounds memory to row_chunk x (2G)^2).
        blockwise: Refine the float parts of each block against its full-precision outputs.
        lr: Adam learning rate of the block-wise refinement.
        epochs: Passes over the calibration batches in the block-wise refinement.
        weight_decay: Adam weight decay of the block-wise refinement.
        train_norms: Also train norm weights/biases in the block-wise refinement.
        train_biases: Also train linear biases in the block-wise refinement.
        scale_dtype: Storage dtype of scale and zero: solver results are rounded to it (and their error
            measured after rounding) so that a checkpoint in this dtype reproduces them.
    """

    bits: int = 2
    group_size: int = 64
    symmetric: bool = False
    method: str = "decoupleq"
    integer_step: str = "gptq"
    max_iter: int = 3
    early_stop_frac: float = 1e-4
    damping: float = 0.01
    max_damping: float = 100.0
    clip_search: bool = True
    clip_grid: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
    act_order: bool = True
    static_groups: bool = True
    gptq_block: int = 128
    pgd_steps: int = 200
    pgd_lr: float = 0.05
    row_chunk: int = 1024
    blockwise: bool = False
    lr: float = 1e-5
    epochs: int = 4
    weight_decay: float = 1e-6
    train_norms: bool = False
    train_biases: bool = False
    scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        if isinstance(self.clip_grid, list):
            object.__setattr__(self, "clip_grid", tuple(self.clip_grid))
        _check_choice("bits", self.bits, _BITS)
        _check_choice("method", self.method, _METHODS)
        _check_choice("integer_step", self.integer_step, _INTEGER_STEPS)
        _check_choice("scale_dtype", self.scale_dtype, _SCALE_DTYPES)
        if not isinstance(self.group_size, int) or (self.group_size != -1 and self.group_size < 1):
            raise ValueError(f"QuantConfig.group_size must be -1 (per channel) or a positive int, "
                             f"got {self.group_size!r}")
        for name in ("max_iter", "gptq_block", "pgd_steps", "row_chunk", "epochs"):
            value = getattr(self, name)
            minimum = 0 if name in ("max_iter", "epochs") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"QuantConfig.{name} must be an int >= {minimum}, got {value!r}")
        for name in ("early_stop_frac", "damping", "lr", "weight_decay", "pgd_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"QuantConfig.{name} must be a number >= 0, got {value!r}")
        if not self.early_stop_frac <= 1:
            raise ValueError(f"QuantConfig.early_stop_frac must be in [0, 1], got {self.early_stop_frac}")
        if self.max_damping < self.damping:
            raise ValueError(f"QuantConfig.max_damping ({self.max_damping}) must be >= damping "
                             f"({self.damping})")
        if not self.clip_grid or any(not 0 < r <= 1 for r in self.clip_grid):
            raise ValueError(f"QuantConfig.clip_grid must be a non-empty list of ratios in (0, 1], "
                             f"got {self.clip_grid!r}")

    @property
    def needs_calibration(self) -> bool:
        """Whether the codes depend on calibration inputs: every method but plain ``rtn`` (a min/max grid
        from the weights alone), and any method with block-wise refinement."""
        return self.method != "rtn" or self.blockwise

    def check_data_free(self, what: str) -> None:
        """Raise ValueError, prefixed with ``what``, when this config cannot quantize without calibration."""
        if self.needs_calibration:
            refined = " with block-wise refinement" if self.blockwise else ""
            raise ValueError(f"{what}: method {self.method!r}{refined} needs calibration batches "
                             "(only plain 'rtn' runs without)")

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return 2 ** (self.bits - 1) - 1

    def group_width(self, in_features: int) -> int:
        """Columns per group for a layer of `in_features` inputs (validated)."""
        self.check_layer("<layer>", in_features)
        return in_features if self.group_size == -1 else self.group_size

    def num_groups(self, in_features: int) -> int:
        """Number of (scale, zero) groups per output row for a layer of `in_features` inputs."""
        return in_features // self.group_width(in_features)

    def check_layer(self, name: str, in_features: int) -> None:
        """Raise ValueError when this config cannot quantize layer `name` of width `in_features`."""
        if in_features < 1:
            raise ValueError(f"layer {name!r}: in_features must be positive, got {in_features}")
        if self.group_size != -1 and in_features % self.group_size != 0:
            raise ValueError(f"layer {name!r}: group_size {self.group_size} does not divide its "
                             f"in_features {in_features}; use a divisor of {in_features} or -1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        out = dataclasses.asdict(self)
        out["clip_grid"] = list(self.clip_grid)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"QuantConfig.from_dict: unknown fields {unknown}")
        return cls(**data)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"QuantConfig.{name} must be one of {list(choices)}, got {value!r}")
