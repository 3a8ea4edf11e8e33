"""The layer-input second moment H = X^T X / n: accumulation and damped factorisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def input_gram(x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """X^T X (K, K) float64 over the rows of `x` (..., K) whose `mask` (...) entry is true (all rows when
    mask is None), and the number of those rows. The product is taken in float32 (float64 matmuls are
    several times slower; float64 inputs stay float64)."""
    rows = x.detach().reshape(-1, x.shape[-1])
    if mask is not None:
        if mask.numel() != rows.shape[0]:
            raise ValueError(f"add_batch: mask of shape {tuple(mask.shape)} does not match the "
                             f"{rows.shape[0]} tokens of input shape {tuple(x.shape)}")
        rows = rows[mask.reshape(-1).to(device=rows.device, dtype=torch.bool)]
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
    return (rows.T @ rows).double(), rows.shape[0]


class HessianAccumulator:
    """Accumulates H = X^T X / n over calibration batches (each batch's product from `input_gram`, the
    sum in float64), skipping masked-out tokens.

    H lives on the device of the first batch.

    Args:
        in_features: K, the layer's input width.
    """

    def __init__(self, in_features: int) -> None:
        self.in_features = in_features
        self._sum: torch.Tensor | None = None
        self.num_tokens = 0

    def add_batch(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the rows of `x` (..., K) whose `mask` (...) entry is true (all rows when mask is None)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"add_batch: input width {x.shape[-1]} != layer in_features {self.in_features}")
        self.add_gram(*input_gram(x, mask))

    def add_gram(self, gram: torch.Tensor, rows: int) -> None:
        """Add a batch's `input_gram` product (K, K) over `rows` tokens."""
        if gram.shape != (self.in_features, self.in_features):
            raise ValueError(f"add_gram: a {tuple(gram.shape)} product for a layer of in_features "
                             f"{self.in_features}")
        if self._sum is None:
            self._sum = torch.zeros_like(gram)
        self._sum += gram.to(self._sum.device)
        self.num_tokens += rows

    def hessian(self) -> torch.Tensor:
        """H (K, K) float64; raises ValueError when no token was accumulated."""
        if self._sum is None or self.num_tokens == 0:
            raise ValueError("no calibration tokens were accumulated for this layer (all masked out?)")
        return self._sum / self.num_tokens


def check_hessian(h: torch.Tensor) -> None:
    """Raise ValueError unless H is a finite square matrix."""
    if h.dim() != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"H must be a square (K, K) matrix, got shape {tuple(h.shape)}")
    if not torch.isfinite(h).all():
        raise ValueError("H contains non-finite values (NaN/inf in the calibration activations?)")


@dataclass
class DampedFactor:
    """H with damping on its diagonal and the upper Cholesky factor U of its permuted inverse.

    Attributes:
        h: (K, K) float64 damped H in the original column order.
        perm: (K,) column order of the rounding loop (descending diag H for act-order, else identity).
        inv_chol: (K, K) float64 upper-triangular U with (H[perm][:, perm])^-1 = U^T U.
        damping: Fraction of mean(diag H) that was added to the diagonal.
    """

    h: torch.Tensor
    perm: torch.Tensor
    inv_chol: torch.Tensor
    damping: float


def damped_factor(h: torch.Tensor, damping: float, max_damping: float, act_order: bool) -> DampedFactor:
    """Damp H by `damping * mean(diag H)` and factorise; raise the damping x10 while Cholesky fails.

    The escalation goes up to `max_damping` (a fraction of mean(diag H)); an H that no damping makes
    positive definite (non-finite entries) raises ValueError.

    Args:
        h: (K, K) symmetric positive semi-definite matrix.
        act_order: Factorise H in descending diag(H) order (for act-order rounding).
    """
    check_hessian(h)
    h = h.to(torch.float64)
    mean_diag = float(h.diagonal().mean())
    base = mean_diag if mean_diag > 0 else 1.0
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    perm = (torch.argsort(h.diagonal(), descending=True, stable=True) if act_order
            else torch.arange(h.shape[0], device=h.device))
    frac = damping
    while True:
        damped = h + (frac * base) * eye
        chol, info = torch.linalg.cholesky_ex(damped[perm][:, perm])
        if int(info) == 0:
            inv_chol, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
            if int(info) == 0:
                return DampedFactor(damped, perm, inv_chol, frac)
        if frac >= max_damping:
            raise ValueError(f"H is not positive definite even with damping {frac} x mean(diag H)")
        # A zero damping cannot grow by multiplication: restart from a small positive fraction.
        frac = min(max_damping, frac * 10 if frac > 0 else 1e-4)
