"""QuantLinear and dequant_matmul (torch backend): fake-quant parity, gradients, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decoupleq.config import QuantConfig
from decoupleq.kernels import _dequant_matmul_op, dequant_matmul, dequant_matmul_reference
from decoupleq.kernels.packing import pack
from decoupleq.nn import QuantLinear


def _quant_linear(k: int, n: int, bits: int, group: int, bias: bool = True, seed: int = 0) -> QuantLinear:
    g = torch.Generator().manual_seed(seed)
    groups = 1 if group == -1 else -(-k // group)
    q = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n, k), generator=g)
    scale = torch.rand(n, groups, generator=g) * 0.1 + 0.01
    zero = torch.randn(n, groups, generator=g) * 0.05
    return QuantLinear.from_linear(nn.Linear(k, n, bias=bias), q, scale, zero, (bits, group), backend="torch")


@pytest.mark.parametrize(("bits", "group"), [(2, 32), (3, 64), (4, -1), (8, 16)])
def test_packed_forward_equals_fake_quant(bits: int, group: int) -> None:
    layer = _quant_linear(100, 24, bits, group)
    x = torch.randn(2, 5, 100)
    expected = nn.functional.linear(x, layer.dequantized_weight(), layer.bias)
    assert torch.equal(layer(x), expected)


def test_from_linear_stores_given_quantization() -> None:
    lin = nn.Linear(64, 8)
    q = torch.randint(-2, 2, (8, 64))
    scale, zero = torch.rand(8, 2), torch.randn(8, 2)
    layer = QuantLinear.from_linear(lin, q, scale, zero, (2, 32))
    w = scale.repeat_interleave(32, 1) * q + zero.repeat_interleave(32, 1)
    assert torch.allclose(layer.dequantized_weight(), w)
    assert torch.equal(layer.bias, lin.bias)
    assert isinstance(layer.scale, nn.Parameter) and isinstance(layer.zero, nn.Parameter)
    assert "packed" in dict(layer.named_buffers()) and not layer.packed.dtype.is_floating_point
    with pytest.raises(ValueError, match="scale"):
        QuantLinear.from_linear(lin, q, torch.rand(8, 3), zero, (2, 32))
    from_config = QuantLinear.from_linear(lin, q, scale, zero, QuantConfig(bits=2, group_size=32))
    assert torch.equal(from_config.packed, layer.packed) and from_config.group_size == 32


def test_custom_op_gradients_match_reference_autograd() -> None:
    layer = _quant_linear(70, 12, 3, 32)
    x = torch.randn(4, 70, requires_grad=True)
    grad_out = torch.randn(4, 12)
    params = (x, layer.scale, layer.zero, layer.bias)
    layer(x).backward(grad_out)
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    ref = dequant_matmul_reference(x, layer.packed, layer.scale, layer.zero, 3, 32, layer.bias)
    ref.backward(grad_out)
    for a, p in zip(got, params, strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-5)


def test_custom_op_registration_passes_opcheck() -> None:
    layer = _quant_linear(64, 16, 2, 32)
    x = torch.randn(3, 64, requires_grad=True)
    args = (x, layer.packed, layer.scale.detach().requires_grad_(), layer.zero.detach(), None, 2, 32, "torch")
    torch.library.opcheck(_dequant_matmul_op, args)


def test_no_nan_at_two_bits_with_extreme_scales() -> None:
    layer = _quant_linear(128, 16, 2, 64)
    x = torch.randn(4, 128)
    for dtype, tiny, big in ((torch.float32, 1e-30, 1e4), (torch.float16, 1e-7, 1e2)):
        layer = layer.to(dtype)
        with torch.no_grad():
            layer.scale[:8], layer.scale[8:] = tiny, big
            layer.zero.fill_(-big)
        y = layer(x.to(dtype))
        assert torch.isfinite(y).all(), dtype
        expected = nn.functional.linear(x.double(), layer.dequantized_weight().double(), layer.bias.double())
        torch.testing.assert_close(y.double(), expected, rtol=1e-2, atol=1e-3 * expected.abs().max().item())


def test_quant_linear_under_torch_compile() -> None:
    model = nn.Sequential(_quant_linear(64, 32, 2, 32), nn.ReLU(), _quant_linear(32, 8, 4, -1, seed=1))
    x = torch.randn(5, 64)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
    compiled(x).sum().backward()
    assert model[0].scale.grad is not None and model[2].zero.grad is not None


def test_dispatch_validates_inputs() -> None:
    layer = _quant_linear(64, 8, 2, 32)
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match="backend"):
        dequant_matmul(x, layer.packed, layer.scale, layer.zero, 2, 32, backend="cuda")
    with pytest.raises(ValueError, match="scales"):
        dequant_matmul(x, layer.packed, layer.scale[:, :1], layer.zero, 2, 32)
    with pytest.raises(ValueError, match="packed"):
        dequant_matmul(x, pack(torch.zeros(8, 96, dtype=torch.int8), 2), layer.scale, layer.zero, 2, 32)
