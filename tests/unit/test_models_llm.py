from functools import partial

import pytest
import torch
from models_helpers import make_batch, tiny_speech_llm, tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from seed_asr.models.llm import build_qwen2, load_causal_lm
from seed_asr.text.tokenizer import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_built_in_qwen2_is_sized_for_the_tokenizer():
    tok = tiny_tokenizer()
    model = build_qwen2(tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


@pytest.fixture
def saved_llama(tmp_path):
    """A tiny Llama (another architecture than the built-in) and its tokenizer saved to a folder."""
    tok = tiny_tokenizer()
    tok.pad_token = None  # as many pretrained tokenizers: load_tokenizer must supply one
    config = LlamaConfig(
        vocab_size=len(tok) + 3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, model


def test_local_pretrained_llm_and_tokenizer_load_and_drive_the_speech_llm(saved_llama):
    path, original = saved_llama
    tok = load_tokenizer(str(path))
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    loaded = load_causal_lm(tok, str(path))
    ids = torch.tensor([tok.encode("call anneliese", add_special_tokens=False)])
    torch.testing.assert_close(loaded(ids).logits, original(ids).logits)

    model = tiny_speech_llm(tok, llm=partial(load_causal_lm, path=str(path))).eval()
    assert model.converter.proj[-1].out_features == 32
    batch = make_batch(["call anneliese okonkwo", "今天天气很好"], [50, 30])
    out = model(batch)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    scores = model.score(batch, [[ids[0].tolist()], [ids[0].tolist()]])
    assert scores.shape == (2, 1) and (scores < 0).all()


def test_bad_llm_paths_and_vocabularies_are_named(saved_llama, tmp_path):
    path, _ = saved_llama
    with pytest.raises(FileNotFoundError, match="not a local model folder"):
        load_causal_lm(tiny_tokenizer(), str(tmp_path / "missing"))
    bigger = tiny_tokenizer()
    bigger.add_tokens([f"<extra{i}>" for i in range(10)])  # the Llama embeds len(tokenizer) + 3
    with pytest.raises(ValueError, match="embeds only"):
        load_causal_lm(bigger, str(path))
