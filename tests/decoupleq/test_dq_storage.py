"""save_quantized / load_quantized: bit-exact round trip and the packed size."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn

from decoupleq.checkpoint import load_quantized, read_header, save_quantized
from decoupleq.nn import QuantLinear


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 512, bias=False), nn.LayerNorm(512))


def _quantize(model: nn.Module, bits: int, group: int) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for i in (0, 2):
        lin = model[i]
        n, k = lin.out_features, lin.in_features
        groups = k // group
        q = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n, k), generator=g)
        model[i] = QuantLinear.from_linear(
            lin, q, torch.rand(n, groups, generator=g), torch.randn(n, groups, generator=g), (bits, group)
        )
    return model


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _quantize(_model().to(torch.bfloat16), 3, 64)
    save_quantized(model, tmp_path / "q.safetensors")
    loaded = load_quantized(_model().to(torch.bfloat16), tmp_path / "q.safetensors")
    assert isinstance(loaded[0], QuantLinear) and isinstance(loaded[2], QuantLinear)
    assert loaded[0].bits == 3 and loaded[0].group_size == 64 and loaded[2].bias is None
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    x = torch.randn(3, 512, dtype=torch.bfloat16)
    assert torch.equal(loaded(x), model(x))
    assert read_header(tmp_path / "q.safetensors")["layers"]["0"]["bits"] == 3


def test_w2_g64_file_is_about_a_sixth_of_fp16(tmp_path: Path) -> None:
    fp16 = _model().half()
    save_model(fp16, str(tmp_path / "fp16.safetensors"))
    save_quantized(_quantize(fp16, 2, 64), tmp_path / "w2.safetensors")
    ratio = (tmp_path / "w2.safetensors").stat().st_size / (tmp_path / "fp16.safetensors").stat().st_size
    # Linear weights: (2 + 2 * 16 / 64) / 16 = 0.156; biases and the norm stay fp16.
    assert 0.15 < ratio < 0.17
