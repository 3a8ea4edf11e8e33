from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from models_helpers import make_batch, one_torch_thread, tiny_tokenizer  # noqa: F401

from seed_asr.models.speech_llm import SpeechLLM

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_model(name: str, tokenizer_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            overrides=[f"+model={name}", f"model.tokenizer.path={tokenizer_dir}", *overrides]
        ).model


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer().save_pretrained(path)
    return path


def test_tiny_config_builds_a_model_that_trains(tokenizer_dir):
    model = instantiate(compose_model("tiny", tokenizer_dir))
    assert isinstance(model, SpeechLLM) and model.ctc_head is not None
    out = model(make_batch(["call anneliese", "今天天气很好"], [40, 30]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_tiny_config_with_lora(tokenizer_dir):
    lora = "++model.lora={_target_: seed_asr.models.llm.apply_lora, _partial_: true, r: 4, alpha: 8}"
    model = instantiate(compose_model("tiny", tokenizer_dir, lora))
    assert all("lora_" in n for n, p in model.llm.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(("name", "d_model", "millions"), [("small", 128, (4, 8)), ("base", 512, (150, 300))])
def test_larger_configs_build_on_the_meta_device(tokenizer_dir, name, d_model, millions):
    cfg = compose_model(name, tokenizer_dir)
    assert cfg.encoder.d_model == d_model and cfg.converter.splice == 2  # tiny's values merged in
    with torch.device("meta"):
        model = instantiate(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    assert millions[0] * 1e6 < n_params < millions[1] * 1e6, n_params
    assert model.encoder_layer == -1 or model.encoder_layer < len(model.encoder.blocks)
