"""decoupleQ on a SpeechLLM: config validation, the block plan and its token masks, what gets quantized,
accuracy at 8 bits against the float model, and the quantized folder round trip through the one loader."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from decoupleq.nn import QuantLinear
from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.artifacts.quantized import WEIGHTS, save_quantized_speech_llm
from seed_asr.artifacts.serialization import cmvn_to_dict
from seed_asr.data.features import Fbank, FeatureExtractor, GlobalCMVN
from seed_asr.quant.spec import QuantSpec
from seed_asr.quant.speech_llm import block_plan, check_spec, quantize_speech_llm, segment_masks
from tests.unit.models_helpers import make_batch, tiny_speech_llm

TEXTS = ["call anneliese okonkwo", "play some music please", "今天天气很好"]
FRAMES = [90, 61, 75]
# tiny_speech_llm's config, enough for build_speech_llm to rebuild the same architecture
MODEL_CFG = {
    "_target_": "seed_asr.models.speech_llm.SpeechLLM",
    "encoder": {"_target_": "seed_asr.models.encoder.ConformerEncoder", "d_model": 32, "num_layers": 2,
                "num_heads": 4, "ff_mult": 2, "conv_kernel": 5, "dropout": 0.0},
    "converter": {"_target_": "seed_asr.models.converter.Converter", "_partial_": True, "splice": 2,
                  "hidden_dim": 64},
    "llm": {"_target_": "seed_asr.models.llm.build_qwen2", "_partial_": True, "hidden_size": 32,
            "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64},
    "prompt": {"_target_": "seed_asr.text.prompts.PromptBuilder", "_partial_": True,
               "max_context_tokens": 32},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def spec(exclude: tuple[str, ...] = (), **config) -> QuantSpec:
    return QuantSpec.from_cfg({"name": "t", "config": {"group_size": 32, "max_iter": 1, **config},
                               "exclude": list(exclude), "calib_batches": 1})


def model_and_batch(seed: int = 0) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    return tiny_speech_llm().eval(), make_batch(TEXTS, FRAMES)


@pytest.mark.parametrize(("node", "message"), [
    ({"name": "x", "config": {"bits": 5}}, "bits"),
    ({"name": "x", "config": {"bits": 2, "gruop_size": 64}}, "gruop_size"),
    ({"name": "x", "config": {}, "parts": ["decoder"]}, "parts"),
    ({"name": "x", "config": {}, "calib_batches": 0}, "calib_batches=0: method 'decoupleq'"),
    ({"name": "x", "config": {"method": "rtn", "blockwise": True}, "calib_batches": 0}, "block-wise"),
    ({"name": "x", "config": {"method": "rtn"}, "calib_batches": -1}, "calib_batches must be an int >= 0"),
    ({"name": "x", "config": {}, "exclude": ["(unclosed"]}, "exclude"),
    ({"name": "x y", "config": {}}, "name"),
    ({"name": "x", "config": {}, "calib": 3}, "calib"),
])
def test_bad_quant_config_is_rejected_naming_the_field(node: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuantSpec.from_cfg(node)


def test_method_switch_is_validated_with_the_calibration_it_gets() -> None:
    node = {"name": "x", "config": {"method": "decoupleq"}, "calib_batches": 0}
    assert QuantSpec.from_cfg(node, method="rtn").config.method == "rtn"  # data-free: valid
    with pytest.raises(ValueError, match="needs calibration"):
        QuantSpec.from_cfg({**node, "config": {"method": "rtn"}}, method="gptq")


def test_data_free_rtn_quantizes_as_calibrated_rtn() -> None:
    quantized = []
    for batches in ([make_batch(TEXTS, FRAMES)], []):
        model, _ = model_and_batch()
        report = quantize_speech_llm(model, batches, spec(method="rtn", bits=2))
        layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
        assert set(layers) == set(report.layers)
        quantized.append((layers, report))
    (calibrated, measured), (data_free, unmeasured) = quantized
    for name, layer in calibrated.items():
        assert torch.equal(layer.packed, data_free[name].packed)
        other = data_free[name]
        assert torch.equal(layer.scale, other.scale) and torch.equal(layer.zero, other.zero)
    assert all(r.error > 0 for r in measured.layers.values())
    assert all(math.isnan(r.error) and r.tokens == 0 for r in unmeasured.layers.values())  # not measured


def test_group_size_that_does_not_divide_a_layer_is_rejected_before_any_work() -> None:
    model, _ = model_and_batch()
    with pytest.raises(ValueError, match="group_size 48 does not divide"):
        check_spec(model, spec(group_size=48))
    assert not any(isinstance(m, QuantLinear) for m in model.modules())


def test_block_plan_masks_match_the_inputs_each_segment_sees() -> None:
    model, batch = model_and_batch()
    plan = block_plan(model, ["encoder", "converter", "llm"])
    assert [s.part for s in plan] == ["encoder", "converter", "llm"]
    assert plan[0].blocks == list(model.encoder.blocks) and plan[1].blocks == [model.converter]
    assert plan[2].blocks == list(model.base_llm.get_decoder().layers)
    seen = {}
    hooks = [
        model.encoder.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault("encoder", a)),
        model.converter.proj[0].register_forward_pre_hook(lambda m, a: seen.setdefault("converter", a)),
        model.base_llm.get_decoder().layers[0].register_forward_pre_hook(
            lambda m, a, k: seen.setdefault("llm", (a, k)), with_kwargs=True),
    ]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    masks = segment_masks(model, batch)
    x, valid = seen["encoder"]
    assert torch.equal(masks["encoder"], valid)  # the block's own validity mask
    assert masks["converter"].shape == seen["converter"][0].shape[:2]
    hidden = seen["llm"][0][0] if seen["llm"][0] else seen["llm"][1]["hidden_states"]
    assert masks["llm"].shape == hidden.shape[:2]
    # transcript tokens + audio + prompt per row: the row sums are the unpadded sequence lengths
    lengths = masks["llm"].sum(-1)
    assert lengths.tolist() != [lengths[0].item()] * 3 and masks["llm"][:, 0].all()


def test_only_block_linears_are_quantized_and_exclude_keeps_full_precision() -> None:
    model, batch = model_and_batch()
    report = quantize_speech_llm(model, [batch], spec(exclude=[r"down_proj"]))
    quantized = {n for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert quantized == set(report.layers)
    assert any(n.startswith("encoder.blocks.") for n in quantized)
    assert {"converter.proj.0", "converter.proj.2"} <= quantized
    assert any(".self_attn.q_proj" in n for n in quantized)
    assert not any("down_proj" in n for n in quantized)
    float_linears = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    assert "encoder.subsample.proj" in float_linears and "ctc_head" not in quantized
    assert all(0 <= r.error < 1 for r in report.layers.values())


def test_eight_bit_model_matches_float_and_two_bit_differs() -> None:
    losses = {}
    for bits in (None, 8, 2):
        model, batch = model_and_batch()
        if bits is not None:
            quantize_speech_llm(model, [batch], spec(bits=bits))
        with torch.no_grad():
            losses[bits] = float(model(batch)["ce_loss"])
    assert losses[8] == pytest.approx(losses[None], rel=2e-3)
    assert abs(losses[2] - losses[None]) > 10 * abs(losses[8] - losses[None])


def test_quantized_folder_round_trips_through_load_speech_llm(tmp_path) -> None:
    model, batch = model_and_batch()
    quantize_speech_llm(model, [batch], spec(bits=3, blockwise=True, epochs=1))
    cmvn = GlobalCMVN(torch.zeros(80), torch.ones(80))
    cfg = {"model": {**MODEL_CFG, "tokenizer": {"path": None}}}
    save_quantized_speech_llm(model, tmp_path / "f32", cfg, model.tokenizer, cmvn_to_dict(cmvn),
                              {"name": "t"}, dtype=torch.float32)
    save_quantized_speech_llm(model, tmp_path / "f16", cfg, model.tokenizer, cmvn_to_dict(cmvn),
                              {"name": "t"})
    loaded = load_speech_llm(tmp_path / "f32", backend="torch")
    assert isinstance(loaded.features, FeatureExtractor) and isinstance(loaded.features.fbank, Fbank)
    with torch.no_grad():
        expected, got = model(batch)["ce_loss"], loaded.model(batch)["ce_loss"]
    assert torch.equal(expected, got)
    packed32, packed16 = load_file(tmp_path / "f32" / WEIGHTS), load_file(tmp_path / "f16" / WEIGHTS)
    assert all(torch.equal(packed32[k], packed16[k]) for k in packed32 if k.endswith(".packed"))
    assert (tmp_path / "f16" / WEIGHTS).stat().st_size < 0.6 * (tmp_path / "f32" / WEIGHTS).stat().st_size


@pytest.mark.parametrize(("encoder_layer", "parts", "encoder_runs"), [
    (-1, ("encoder", "converter", "llm"), 1), (0, ("encoder", "converter", "llm"), 1),
    (-1, ("encoder", "llm"), 2),  # the float converter between them: the LLM's inputs from the whole model
])
def test_each_part_is_calibrated_on_the_quantized_parts_before_it_without_running_them_again(
        encoder_layer: int, parts: tuple[str, ...], encoder_runs: int) -> None:
    model, batch = model_and_batch()
    model.encoder_layer = encoder_layer
    first_inputs: dict[str, list] = {"converter": [], "llm": []}
    subsampled = []
    hooks = [
        model.encoder.subsample.register_forward_hook(lambda *_: subsampled.append(1)),
        model.converter.register_forward_pre_hook(lambda m, a: first_inputs["converter"].append(a[0])),
        model.base_llm.get_decoder().layers[0].register_forward_pre_hook(
            lambda m, a, k: first_inputs["llm"].append(a[0] if a else k["hidden_states"]), with_kwargs=True),
    ]
    quantize_speech_llm(model, [batch], QuantSpec.from_cfg({
        "name": "t", "config": {"bits": 2, "group_size": 32, "max_iter": 1}, "parts": list(parts),
        "calib_batches": 1}))
    assert len(subsampled) == encoder_runs  # 1: the later parts started from the encoder's kept outputs
    calibrated = {part: calls[0] for part, calls in first_inputs.items()}
    with torch.no_grad():
        model(batch)  # the quantized model: what each part receives at inference
    for h in hooks:
        h.remove()
    for part in (model.encoder, model.converter):
        assert any(isinstance(m, QuantLinear) for m in part.modules()) == (part is model.encoder or
                                                                           "converter" in parts)
    for part, calls in first_inputs.items():
        torch.testing.assert_close(calibrated[part], calls[-1], rtol=1e-4, atol=1e-5)
