"""GPTQ and RTN against a column-at-a-time restatement of the IST-DASLab GPTQ reference (gptq.py,
quant.py): its min/max grid with an integer zero point, dead-input handling, damping, act-order and
static or dynamic groups. The reference's lazy block updates do not change its result, so the
restatement updates every later column after each one."""

import pytest
import torch

from decoupleq.config import QuantConfig
from decoupleq.quantizer import dequantize
from decoupleq.solver import quantize_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def layer(n: int, k: int, dead: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (n, k) and H = X^T X / T of correlated inputs, the first `dead` inputs always zero."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * k, k, generator=gen, dtype=torch.float64) @ torch.randn(k, k, generator=gen,
                                                                                  dtype=torch.float64)
    x = x * torch.exp(torch.randn(k, generator=gen, dtype=torch.float64))
    x[:, :dead] = 0
    return 0.05 * torch.randn(n, k, generator=gen, dtype=torch.float64), x.T @ x / x.shape[0]


def find_params(x: torch.Tensor, maxq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's per-row asymmetric grid: scale and integer zero point of [min(x, 0), max(x, 0)]."""
    xmin, xmax = x.min(1).values.clamp(max=0), x.max(1).values.clamp(min=0)
    both = (xmin == 0) & (xmax == 0)
    xmin[both], xmax[both] = -1, 1
    scale = (xmax - xmin) / maxq
    return scale, torch.round(-xmin / scale)


def reference_gptq(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, act_order: bool,
                   static_groups: bool, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed codes (N, K) and W_hat (N, K) of reference GPTQ (group_size -1: one grid per row)."""
    w, h = w.clone(), h.clone()
    n, k = w.shape
    gs, maxq = (k if group_size == -1 else group_size), 2 ** bits - 1
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    grids = [find_params(w[:, i:i + gs], maxq) for i in range(0, k, gs)]
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    w, h = w[:, perm], h[perm][:, perm]
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes, w_hat = torch.zeros_like(w), torch.zeros_like(w)
    for i in range(k):
        group = int(perm[i]) // gs
        if not static_groups and int(perm[i]) % gs == 0:
            grids[group] = find_params(w[:, i:i + gs], maxq)
        scale, zero = grids[group]
        u = torch.clamp(torch.round(w[:, i] / scale) + zero, 0, maxq)
        codes[:, i], w_hat[:, i] = u - 2 ** (bits - 1), scale * (u - zero)
        err = (w[:, i] - w_hat[:, i]) / hinv[i, i]
        w[:, i:] -= torch.outer(err, hinv[i, i:])
    back = torch.argsort(perm)
    return codes[:, back], w_hat[:, back]


def ours(w, h, **fields):
    res = quantize_layer(w.float(), h, QuantConfig(scale_dtype="float32", **fields))
    gs = fields["group_size"]
    return res.q.double(), dequantize(res.q, res.scale.double(), res.zero.double(), gs)


@pytest.mark.parametrize("bits, group_size, act_order", [(2, 32, True), (2, -1, True), (3, 32, True),
                                                          (4, 64, False), (2, 32, False)])
def test_gptq_matches_the_reference(bits, group_size, act_order):
    w, h = layer(24, 192, dead=3, seed=bits)
    ref_q, ref_w_hat = reference_gptq(w.float().double(), h, bits, group_size, act_order, static_groups=True)
    q, w_hat = ours(w, h, bits=bits, group_size=group_size, method="gptq", act_order=act_order)
    assert torch.equal(q, ref_q)
    torch.testing.assert_close(w_hat, ref_w_hat, rtol=0, atol=1e-6)


def test_dynamic_groups_match_the_reference_where_groups_start_blocks():
    """The reference fits a dynamic group's grid on weights that miss the current block's updates;
    with groups as long as the blocks (and no act-order) that is every earlier update, as here."""
    w, h = layer(24, 192, dead=0, seed=5)
    ref_q, _ = reference_gptq(w.float().double(), h, 2, 32, act_order=False, static_groups=False)
    q, _ = ours(w, h, bits=2, group_size=32, method="gptq", act_order=False, static_groups=False,
                gptq_block=32)
    assert torch.equal(q, ref_q)
    static_q, _ = ours(w, h, bits=2, group_size=32, method="gptq", act_order=False, gptq_block=32)
    assert not torch.equal(q, static_q)


@pytest.mark.parametrize("bits, group_size", [(2, 32), (3, -1), (4, 64)])
def test_rtn_is_round_to_nearest_on_the_reference_grid(bits, group_size):
    w, h = layer(16, 128, dead=0, seed=7)
    w = w.float().double()
    gs, maxq = (128 if group_size == -1 else group_size), 2 ** bits - 1
    ref = []
    for i in range(0, 128, gs):
        scale, zero = find_params(w[:, i:i + gs], maxq)
        u = torch.clamp(torch.round(w[:, i:i + gs] / scale[:, None]) + zero[:, None], 0, maxq)
        ref.append(u - 2 ** (bits - 1))
    q, _ = ours(w, h, bits=bits, group_size=group_size, method="rtn")
    assert torch.equal(q, torch.cat(ref, dim=1))


def test_rtn_clip_beats_plain_rtn_on_an_outlier():
    w, h = layer(32, 128, dead=0, seed=3)
    w[:, 0] *= 8  # one outlier column: clipping the others' range pays
    h = torch.diag(torch.diagonal(h))
    plain = quantize_layer(w.float(), h, QuantConfig(bits=2, group_size=32, method="rtn"))
    clipped = quantize_layer(w.float(), h, QuantConfig(bits=2, group_size=32, method="rtn_clip"))
    assert clipped.error < plain.error
