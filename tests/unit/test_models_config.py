from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from models_helpers import make_batch, tiny_tokenizer

from seed_asr.models.speech_llm import SpeechLLM

CONF = Path(__file__).resolve().parents[2] / "conf"

pytestmark = pytest.mark.usefixtures("one_thread")


def compose_model(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+model={name}", *overrides]).model


@pytest.fixture(scope="module")
def tokenizer():
    """The `tokenizer` node holds settings for the training stages; the model takes the object."""
    return tiny_tokenizer()


def test_tiny_config_builds_a_model_that_trains(tokenizer):
    model = instantiate(compose_model("tiny"), tokenizer=tokenizer)
    assert isinstance(model, SpeechLLM) and model.ctc_head is not None
    out = model(make_batch(["call anneliese", "今天天气很好"], [40, 30]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_tiny_config_with_lora(tokenizer):
    lora = "++model.lora={_target_: seed_asr.models.llm.apply_lora, _partial_: true, r: 4, alpha: 8}"
    model = instantiate(compose_model("tiny", lora), tokenizer=tokenizer)
    assert all("lora_" in n for n, p in model.llm.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(("name", "d_model", "millions"), [("small", 128, (4, 8)), ("base", 512, (150, 300))])
def test_larger_configs_build_on_the_meta_device(tokenizer, name, d_model, millions):
    cfg = compose_model(name)
    assert cfg.encoder.d_model == d_model and cfg.converter.splice == 2  # tiny's values merged in
    with torch.device("meta"):
        model = instantiate(cfg, tokenizer=tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    assert millions[0] * 1e6 < n_params < millions[1] * 1e6, n_params
    assert model.encoder_layer == -1 or model.encoder_layer < len(model.encoder.blocks)
