"""Layer solvers: closed-form float step against brute-force least squares, monotone alternation,
decoupleQ <= GPTQ <= RTN, damping escalation, H accumulation with masks."""

import pytest
import torch

from decoupleq.config import QuantConfig
from decoupleq.hessian import HessianAccumulator, damped_factor
from decoupleq.quantizer import dequantize, minmax_init, quantize_codes, row_errors
from decoupleq.solver import LayerQuantizer, float_step, quantize_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def correlated_layer(n=64, k=256, tokens=2048, seed=0):
    """A weight (n, k) and H of correlated, heavy-tailed inputs with uneven channel scales."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=gen) / k ** 0.5
    heavy = torch.randn(tokens, k, generator=gen) * torch.exp(0.5 * torch.randn(tokens, 1, generator=gen))
    x = heavy @ mix + 0.1 * torch.randn(tokens, k, generator=gen)
    x = x * torch.exp(0.7 * torch.randn(k, generator=gen))
    w = 0.02 * torch.randn(n, k, generator=gen)
    return w, (x.double().T @ x.double()) / tokens


def brute_force_float_step(w, q, h, group_size, symmetric):
    """Per row, lstsq on the explicit design matrix: min ||L^T (w - A theta)|| with H = L L^T."""
    n, k = w.shape
    gs = k if group_size == -1 else group_size
    member = torch.nn.functional.one_hot(torch.arange(k) // gs).double()  # (K, G)
    lt = torch.linalg.cholesky(h).T
    scales, zeros = [], []
    for i in range(n):
        a = member * q[i].double()[:, None]
        if not symmetric:
            a = torch.cat([a, member], dim=1)
        theta = torch.linalg.lstsq(lt @ a, lt @ w[i].double()).solution
        g = member.shape[1]
        scales.append(theta[:g])
        zeros.append(theta[g:] if not symmetric else torch.zeros(g, dtype=torch.float64))
    return torch.stack(scales), torch.stack(zeros)


@pytest.mark.parametrize("group_size, symmetric", [(-1, False), (8, False), (8, True), (-1, True)])
def test_float_step_matches_least_squares(group_size, symmetric):
    w, h = correlated_layer(n=6, k=32, tokens=256)
    q = torch.randint(-2, 2, w.shape, generator=torch.Generator().manual_seed(1)).double()
    scale, zero = float_step(w, q, h, group_size, symmetric, row_chunk=4)
    ref_scale, ref_zero = brute_force_float_step(w, q, h, group_size, symmetric)
    torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(zero, ref_zero, rtol=1e-6, atol=1e-9)


def test_float_step_survives_degenerate_groups():
    w, h = correlated_layer(n=4, k=32, tokens=256)
    q = torch.zeros(w.shape, dtype=torch.float64)  # every group's codes equal: s and z collinear
    scale, zero = float_step(w, q, h, 8, False, row_chunk=4)
    assert torch.isfinite(scale).all() and torch.isfinite(zero).all()


def test_minmax_init_maps_range_onto_codes():
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    scale, zero = minmax_init(w, bits=2, group_size=-1, symmetric=False)
    assert scale.item() == pytest.approx(1.0) and zero.item() == pytest.approx(1.0)
    q = quantize_codes(w, scale, zero, -2, 1)
    assert q.tolist() == [[-2.0, -1.0, 0.0, 1.0]]  # (0.5 - 1) / 1 = -0.5 rounds half to even: 0
    sym_scale, sym_zero = minmax_init(w, bits=2, group_size=-1, symmetric=True)
    assert sym_scale.item() == pytest.approx(4.0 / 3.0) and sym_zero.item() == 0.0


def test_alternation_never_increases_row_objective():
    w, h = correlated_layer()
    base = dict(bits=2, group_size=64, early_stop_frac=0.0, scale_dtype="float32")
    hd = damped_factor(h, 0.01, 100.0, True).h
    before = quantize_layer(w, h, QuantConfig(**base, max_iter=1))
    after = quantize_layer(w, h, QuantConfig(**base, max_iter=3))
    err_before = row_errors(w, dequantize(before.q, before.scale.double(), before.zero.double(), 64), hd)
    err_after = row_errors(w, dequantize(after.q, after.scale.double(), after.zero.double(), 64), hd)
    assert (err_after <= err_before * (1 + 1e-6)).all()
    objective = after.stats["objective"]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(objective, objective[1:], strict=False))


@pytest.mark.parametrize("bits, group_size", [(2, 64), (2, -1), (3, 64)])
def test_decoupleq_beats_gptq_beats_rtn(bits, group_size):
    w, h = correlated_layer(seed=bits)
    errors = {m: quantize_layer(w, h, QuantConfig(bits=bits, group_size=group_size, method=m)).error
              for m in ("rtn", "gptq", "decoupleq")}
    assert errors["decoupleq"] < errors["gptq"] < errors["rtn"], errors


def test_results_keep_shapes_and_code_range():
    w, h = correlated_layer(n=16, k=128)
    for method in ("rtn", "gptq", "decoupleq"):
        res = quantize_layer(w, h, QuantConfig(bits=3, group_size=32, method=method))
        assert res.q.dtype == torch.int8 and res.q.shape == w.shape
        assert res.scale.shape == res.zero.shape == (16, 4)
        assert int(res.q.min()) >= -4 and int(res.q.max()) <= 3
        w_hat = dequantize(res.q, res.scale.double(), res.zero.double(), 32)
        rel = (row_errors(w, w_hat, h).sum() / row_errors(w, torch.zeros_like(w), h).sum()).sqrt()
        assert res.error == pytest.approx(float(rel), rel=1e-6)


def test_act_order_permutation_is_undone():
    """With a diagonal H there is no error feedback, so GPTQ rounding (act-order) must equal RTN."""
    w, _ = correlated_layer(n=16, k=128)
    h = torch.diag(torch.rand(128, dtype=torch.float64) + 0.1)
    config = QuantConfig(bits=2, group_size=32, max_iter=1)
    rtn = quantize_layer(w, h, QuantConfig(bits=2, group_size=32, method="rtn"))
    gptq = quantize_layer(w, h, QuantConfig(bits=2, group_size=32, method="gptq"))
    assert torch.equal(rtn.q, gptq.q)
    torch.testing.assert_close(rtn.scale, gptq.scale)
    assert quantize_layer(w, h, config).error <= rtn.error


def test_pgd_integer_step_improves_on_rtn():
    w, h = correlated_layer(n=32, k=128)
    rtn = quantize_layer(w, h, QuantConfig(bits=2, group_size=32, method="rtn"))
    config = QuantConfig(bits=2, group_size=32, integer_step="pgd", pgd_steps=50, max_iter=2)
    pgd = quantize_layer(w, h, config)
    assert pgd.error < rtn.error


@pytest.mark.parametrize("method", ["rtn", "gptq", "decoupleq"])
def test_singular_h_escalates_damping(method):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 128, generator=gen, dtype=torch.float64)  # fewer tokens than inputs
    x[:, :16] = 0  # dead input columns
    h = x.T @ x / 40
    w = torch.randn(16, 128, generator=gen)
    res = quantize_layer(w, h, QuantConfig(method=method, damping=0.0, group_size=32))
    assert torch.isfinite(res.scale).all() and torch.isfinite(res.zero).all() and res.error < 1
    if method != "rtn":
        assert res.stats["damping"] > 0
    assert damped_factor(h, 0.0, 100.0, True).damping > 0
    with pytest.raises(ValueError, match="non-finite"):
        quantize_layer(w, h * float("nan"), QuantConfig(method=method))


def test_hessian_accumulation_masks_padding():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 16, generator=gen)
    mask = torch.rand(3, 10, generator=gen) > 0.3
    quantizer = LayerQuantizer((8, 16), QuantConfig(group_size=8))
    quantizer.add_batch(x[:2], mask[:2])
    quantizer.add_batch(x[2], mask[2])
    kept = x[mask].double()
    torch.testing.assert_close(quantizer.hessian(), kept.T @ kept / kept.shape[0])
    assert quantizer.num_tokens == int(mask.sum())
    with pytest.raises(ValueError, match="no calibration tokens"):
        HessianAccumulator(16).hessian()
    with pytest.raises(ValueError, match="group_size 64 does not divide"):
        LayerQuantizer((8, 16), QuantConfig(group_size=64), name="proj")
