"""Block-wise refinement trains only the float parts and lowers the block's output error."""

import pytest
import torch
from torch import nn

from decoupleq.blockwise import float_parameters, refine_block
from decoupleq.config import QuantConfig
from decoupleq.nn import QuantLinear
from decoupleq.solver import quantize_layer


class Block(nn.Module):
    def __init__(self, width=64, hidden=128):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x, scale=1.0):
        return x + scale * self.down(torch.relu(self.up(self.norm(x))))


def quantized_twin(block, config):
    """A copy of `block` whose linears are RTN-quantized QuantLinear modules."""
    twin = Block()
    twin.load_state_dict(block.state_dict())
    for name in ("up", "down"):
        linear = getattr(twin, name)
        h = torch.eye(linear.in_features, dtype=torch.float64)
        res = quantize_layer(linear.weight.detach(), h, config)
        quantized = QuantLinear.from_linear(linear, res.q, res.scale, res.zero, config, backend="torch")
        setattr(twin, name, quantized)
    return twin


@pytest.mark.parametrize("train_norms", [False, True])
def test_refinement_touches_only_float_parts(train_norms):
    torch.manual_seed(0)
    block = Block()
    config = QuantConfig(bits=2, group_size=32, method="rtn", lr=2e-3, epochs=8, train_norms=train_norms,
                         train_biases=True)
    inputs = [((torch.randn(4, 8, 64),), {"scale": 0.5}) for _ in range(3)]
    with torch.no_grad():
        targets = [block(*a, **k) for a, k in inputs]
    twin = quantized_twin(block, config)
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    result = refine_block(twin, inputs, targets, config)
    assert result.steps == 24 and result.loss_after < 0.9 * result.loss_before
    after = twin.state_dict()
    trained = {id(p) for p in float_parameters(twin, train_norms, True)}
    names = {n for n, p in twin.named_parameters() if id(p) in trained}
    for key, value in before.items():
        if key.endswith("packed"):
            assert torch.equal(after[key], value), key  # integer codes bit-identical
        elif key not in names:
            assert torch.equal(after[key], value), key
    assert ("norm.weight" in names) == train_norms
    assert not torch.equal(after["up.scale"], before["up.scale"])
    assert all(p.grad is None for p in twin.parameters())


def test_refinement_masks_padding_and_never_worsens():
    torch.manual_seed(1)
    block = Block()
    config = QuantConfig(bits=2, group_size=32, method="rtn", lr=10.0, epochs=2)  # absurd lr: gets worse
    inputs = [((torch.randn(2, 8, 64),), {})]
    targets = [block(*inputs[0][0]).detach()]
    twin = quantized_twin(block, config)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :3] = False
    scale = twin.up.scale.detach().clone()
    result = refine_block(twin, inputs, targets, config, masks=[mask])
    assert result.loss_after == result.loss_before
    assert torch.equal(twin.up.scale.detach(), scale)
    with torch.no_grad():
        out = twin(*inputs[0][0])
    expected = float((out - targets[0]).pow(2).mean(-1)[mask].mean())
    assert result.loss_before == pytest.approx(expected, rel=1e-5)
