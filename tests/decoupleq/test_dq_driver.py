"""quantize_model on a tiny Hugging Face Llama (padding mask) and on a plain MLP-block model."""

import math

import pytest
import torch
from torch import nn

from decoupleq.config import QuantConfig
from decoupleq.driver import _stand_in, quantize_model
from decoupleq.nn import QuantLinear
from decoupleq.solver import LayerQuantizer

ORDER = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["up_proj", "gate_proj"], ["down_proj"]]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def padded_batch(pad_fill):
    ids = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0  # left padding of the second sequence
    ids[1, :5] = pad_fill
    return {"input_ids": ids, "attention_mask": mask, "use_cache": False}


def quantized_llama(pad_fill, config, token_mask=None):
    model = tiny_llama()
    batch = padded_batch(pad_fill)
    if token_mask is not None:
        batch["token_mask"] = token_mask
    report = quantize_model(model, lambda: model.model.layers, [batch], config, order=ORDER)
    return model, report


def codes_and_grids(model):
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    return [(m.packed, m.scale.detach(), m.zero.detach()) for m in layers]


def test_llama_padding_does_not_enter_h():
    config = QuantConfig(bits=2, group_size=32, max_iter=2)
    model_a, report = quantized_llama(0, config)
    model_b, _ = quantized_llama(77, config)
    assert len(report.layers) == 14 and all(r.tokens == 19 for r in report.layers.values())
    for (pa, sa, za), (pb, sb, zb) in zip(codes_and_grids(model_a), codes_and_grids(model_b), strict=True):
        assert torch.equal(pa, pb)
        torch.testing.assert_close(sa, sb, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(za, zb, rtol=1e-5, atol=1e-7)
    # Without masking, the padded positions' values do change the result.
    model_c, _ = quantized_llama(77, config, token_mask=torch.ones(2, 12, dtype=torch.bool))
    assert any(not torch.equal(a[1], c[1]) for a, c in zip(codes_and_grids(model_a), codes_and_grids(model_c),
                                                           strict=True))


def test_llama_quantized_logits_stay_close_at_4_bits():
    model = tiny_llama()
    batch = padded_batch(0)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        reference = model(**batch).logits
    report = quantize_model(model, lambda: model.model.layers, [batch], QuantConfig(bits=4, group_size=32),
                            order=ORDER, exclude=["down_proj"])
    assert not any("down_proj" in name for name in report.layers)
    assert isinstance(model.model.layers[1].mlp.down_proj, nn.Linear)
    assert isinstance(model.model.layers[1].mlp.up_proj, QuantLinear)
    with torch.no_grad():
        logits = model(**batch).logits
    rel = (logits - reference)[real].norm() / reference[real].norm()
    assert rel < 0.05 and report.mean_error() < 0.05


def mlp_model(width=64, hidden=128, blocks=3):
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
                           for _ in range(blocks)])


def test_mlp_blocks_groups_see_quantized_earlier_groups():
    model = mlp_model()
    batches = [torch.randn(16, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    block0 = model[0]
    float_weight = block0[2].weight.detach().clone()
    config = QuantConfig(bits=3, group_size=32, max_iter=2)
    report = quantize_model(model, list(model), batches, config, order=[["0$"], ["2$"]])
    assert all(isinstance(m, QuantLinear) for block in model for m in (block[0], block[2]))
    assert set(report.layers) == {f"{b}.{i}" for b in range(3) for i in (0, 2)}
    # Block 0's second linear must have been solved on inputs from the quantized first linear.
    expected = LayerQuantizer((64, 128), config)
    with torch.no_grad():
        for x in batches:
            expected.add_batch(block0[1](block0[0](x)))
    reference = expected.solve(float_weight)
    assert report.layers["0.2"].error == pytest.approx(reference.error, rel=1e-6)


def test_invalid_group_size_fails_before_work():
    model = mlp_model(width=48)
    with pytest.raises(ValueError, match=r"0\.0.*group_size 32 does not divide.*48"):
        quantize_model(model, list(model), [torch.randn(4, 48)], QuantConfig(group_size=32))
    assert not any(isinstance(m, QuantLinear) for m in model.modules())


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    """No QuantLinear left, and every tensor as before (NaN where it was NaN)."""
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key].nan_to_num(), value.nan_to_num()), key


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_is_named_before_any_work(value):
    model = mlp_model()
    with torch.no_grad():
        model[1][2].weight[3, 5] = value
    before = _state(model)
    batches = [torch.randn(8, 64, generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ValueError, match=r"layer '1\.2'.*1 non-finite values.*nothing was quantized"):
        quantize_model(model, list(model), batches, QuantConfig(bits=2, group_size=32, max_iter=2))
    _unchanged(model, before)


def test_a_failure_part_way_leaves_the_model_as_it_was():
    """Block 1's output turns NaN through a linear left out of quantization, so block 2's H fails after
    blocks 0 and 1 were quantized and refined: every replaced linear and refined parameter comes back."""
    model = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 64))
                            for _ in range(3)])
    with torch.no_grad():
        model[1][2].weight[0, 0] = float("nan")  # excluded below, so it passes the weight check
    before = _state(model)
    batches = [torch.randn(8, 64, generator=torch.Generator().manual_seed(0))]
    config = QuantConfig(bits=2, group_size=32, max_iter=2, blockwise=True, epochs=1, lr=1e-3,
                         train_norms=True, train_biases=True)
    with pytest.raises(ValueError, match=r"layer '2\.0'.*non-finite"):
        quantize_model(model, list(model), batches, config, exclude=[r"^1\.2$"])
    _unchanged(model, before)


def test_all_zero_calibration_inputs_give_an_undefined_error_and_a_warning():
    model = mlp_model(blocks=1)
    with pytest.warns(UserWarning, match="relative output error undefined"):
        report = quantize_model(model, list(model), [torch.zeros(8, 64)], QuantConfig(bits=2, group_size=32))
    # the first linear sees only zeros; the second sees GELU(bias), which is not zero
    assert math.isnan(report.layers["0.0"].error) and not math.isnan(report.layers["0.2"].error)
    assert report.mean_error() == report.layers["0.2"].error  # the mean over the defined errors


def test_blocks_may_be_a_module_list():
    model = mlp_model(blocks=2)
    blocks = nn.ModuleList(model)
    report = quantize_model(model, blocks, [torch.randn(8, 64)], QuantConfig(bits=4, group_size=32))
    assert set(report.layers) == {"0.0", "0.2", "1.0", "1.2"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_calibration_stand_ins_compute_what_the_quantized_layer_computes(dtype):
    """Later groups calibrate through a float linear holding the dequantized weight: its outputs must be
    those of the QuantLinear that finally replaces it (bit for bit, in the model's dtype)."""
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(96, 40).to(dtype)
    q = torch.randint(-2, 2, (40, 96), generator=gen)
    scale, zero = torch.rand(40, 3, generator=gen) / 10, torch.randn(40, 3, generator=gen) / 10
    quantized = QuantLinear.from_linear(linear, q, scale, zero, (2, 32), backend="torch")
    x = torch.randn(5, 7, 96, generator=gen).to(dtype)
    with torch.no_grad():
        assert torch.equal(_stand_in(linear, quantized)(x), quantized(x))


def test_data_free_rtn_rounds_as_calibrated_rtn_without_a_forward_pass():
    """Plain RTN's grid comes from the weights alone: without calibration batches it gives the codes and
    grids of a calibrated run, runs no block, and reports the errors as not measured."""
    config = QuantConfig(bits=2, group_size=32, method="rtn")
    calibrated = mlp_model()
    quantize_model(calibrated, list(calibrated), [torch.randn(8, 64)], config)
    model = mlp_model()
    calls = []
    for block in model:
        block.register_forward_hook(lambda *_: calls.append(1))
    report = quantize_model(model, list(model), None, config)
    assert not calls
    pairs = zip(codes_and_grids(model), codes_and_grids(calibrated), strict=True)
    for (p, s, z), (p_ref, s_ref, z_ref) in pairs:
        assert torch.equal(p, p_ref) and torch.equal(s, s_ref) and torch.equal(z, z_ref)
    assert set(report.layers) == {f"{b}.{i}" for b in range(3) for i in (0, 2)}
    assert all(math.isnan(r.error) and r.tokens == 0 for r in report.layers.values())


@pytest.mark.parametrize("config", [QuantConfig(bits=2, group_size=32, method="decoupleq"),
                                    QuantConfig(bits=2, group_size=32, method="gptq"),
                                    QuantConfig(bits=2, group_size=32, method="rtn_clip"),
                                    QuantConfig(bits=2, group_size=32, method="rtn", blockwise=True)])
def test_methods_that_need_calibration_fail_without_it_before_any_work(config):
    model = mlp_model()
    before = _state(model)
    with pytest.raises(ValueError, match=f"method '{config.method}'.*needs calibration batches"):
        quantize_model(model, list(model), None, config)
    _unchanged(model, before)


def test_linears_fed_one_input_share_its_product_and_each_gets_its_own_h(monkeypatch):
    import decoupleq.driver as driver
    from decoupleq.hessian import input_gram
    calls = []
    monkeypatch.setattr(driver, "input_gram", lambda x, mask: calls.append(x.shape) or input_gram(x, mask))
    model = tiny_llama()
    batch = padded_batch(0)
    layer0 = model.model.layers[0]
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    linears = {n: layer0.get_submodule(n) for n in names}
    weights = {n: m.weight.detach().clone() for n, m in linears.items()}
    config = QuantConfig(bits=2, group_size=32, max_iter=2)
    reference = {n: LayerQuantizer(weights[n], config, n) for n in names}
    real = batch["attention_mask"].bool()
    hooks = [m.register_forward_hook(lambda _m, a, _o, q=reference[n]: q.add_batch(a[0], real))
             for n, m in linears.items()]
    with torch.no_grad():
        model(**batch)  # parallel calibration: every linear of block 0 sees the float model's inputs
    for h in hooks:
        h.remove()
    report = quantize_model(model, model.model.layers, [batch], config)
    # q/k/v read one tensor, gate/up another: 4 products per layer for 7 linears
    assert len(calls) == 2 * 4
    for n in names:
        expected = reference[n].solve(weights[n]).error
        assert report.layers[f"model.layers.0.{n}"].error == pytest.approx(expected, rel=1e-6)


def test_block_outputs_are_what_the_quantized_blocks_compute_and_the_last_runs_only_when_asked():
    batches = [torch.randn(16, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    config = QuantConfig(bits=3, group_size=32, max_iter=2)
    runs, outputs = {}, {}
    for asked in (False, True):
        model = mlp_model()
        calls = []
        model[2].register_forward_hook(lambda *_, calls=calls: calls.append(1))
        quantize_model(model, list(model), batches, config,
                       on_block_outputs=outputs.setdefault if asked else None)
        runs[asked] = len(calls)
    assert runs[True] - runs[False] == len(batches)  # the last block's output pass
    assert sorted(outputs) == [0, 1, 2]
    with torch.no_grad():
        for b in range(3):
            for x, out in zip(batches, outputs[b], strict=True):
                torch.testing.assert_close(out, model[: b + 1](x), rtol=1e-5, atol=1e-6)
