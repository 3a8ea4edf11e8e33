"""A pretrained LLM behind the speech LLM, end to end: a Llama with its own byte-level BPE tokenizer and
chat template, trained here for a few steps and written by ``save_pretrained`` (what a user's local
model folder holds), goes through context SFT with LoRA (``model/llm=pretrained``), hears its prompts in
its chat template, decodes with context, and exports and reloads to the same transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dialogues import NAMES, write_dialogue_corpus
from transformers import AutoModelForCausalLM

from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.config import compose_config
from seed_asr.decoding.recognize import DecodingConfig, recognize
from seed_asr.eval import evaluate
from seed_asr.export import export_checkpoint
from seed_asr.testing.pretrained import write_pretrained_llm
from seed_asr.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [f"call {name} now" for name in NAMES] + ["please call me later", "who is calling now"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama trained 20 steps on TEXTS with its BPE tokenizer (chat template), in a folder."""
    return write_pretrained_llm(tmp_path_factory.mktemp("llama"), TEXTS * 4)


@pytest.fixture(scope="module")
def run(pretrained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus, run): 3 steps of context SFT with LoRA on the pretrained Llama."""
    root = tmp_path_factory.mktemp("run")
    corpus = write_dialogue_corpus(root / "corpus")
    overrides = [
        "stage=context_sft", "model=tiny", "trainer=cpu", "logger=csv", "callbacks.progress_bar=null",
        "model/llm=pretrained", f"model.llm.path={pretrained}", f"model.tokenizer.path={pretrained}",
        "model.lora={_target_: seed_asr.models.llm.apply_lora, _partial_: true, r: 4, alpha: 8}",
        f"paths.corpus_dir={corpus}", "data.cmvn_path=null", "data.cmvn_utterances=8", "data.num_workers=0",
        "data.batches_per_epoch=3", "data.max_batch_seconds=8", "data.max_duration=4", "data.bucket_buffer=0",
        "trainer.max_steps=3",
        "model.max_new_tokens_margin=2", "model.max_tokens_per_second=8",
    ]  # fmt: skip
    train(compose_config("train", overrides, root / "context_sft"))
    return corpus, root / "context_sft"


def test_lora_trains_adapters_and_keeps_the_pretrained_weights(pretrained: Path, run: tuple[Path, Path]):
    loaded = load_speech_llm(run[1])
    base = AutoModelForCausalLM.from_pretrained(pretrained, local_files_only=True)
    ours = loaded.model.base_llm.state_dict()
    for name, tensor in base.state_dict().items():
        key = next(k for k in ours if k.replace("base_layer.", "") == name)
        assert torch.equal(ours[key], tensor), name
    lora_b = [v for k, v in loaded.model.llm.state_dict().items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "the adapters were trained (lora_B starts at 0)"


def test_prompts_with_context_use_the_models_chat_template(run: tuple[Path, Path]) -> None:
    model = load_speech_llm(run[1]).model
    ids = model.prompt.build({"history": "call me later", "keywords": ["Okonkwo", "Ilse"]}, None)
    before = model.tokenizer.decode(ids.before_audio)
    assert before.startswith("<s><|user|>") and "call me later" in before and "Okonkwo, Ilse" in before
    assert before.count("<s>") == 1  # the template writes bos: none is added twice
    assert model.tokenizer.decode(ids.after_audio) == "\n<|assistant|>"


def test_decoding_with_context_and_export_reload_give_the_same_transcripts(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, folder = run
    overrides = [f"ckpt={folder}", f"paths.corpus_dir={corpus}", "context_mode=relevant",
                 "data.num_workers=0", "heard_from=${data.train_shards}"]
    metrics = evaluate(compose_config("eval", overrides, tmp_path / "eval"))
    assert metrics["num_utts"] == 9
    split = [metrics.get(f"num_keywords_in_ref/{exposure}", 0) for exposure in ("heard", "unheard")]
    assert sum(split) > 0  # every keyword said is counted as heard in training or not
    by_count = [v for k, v in metrics.items() if k.startswith("num_ref_units/en/train_count_")]
    assert by_count and sum(by_count) == metrics["num_ref_units/en"]  # every reference word is bucketed
    hyps = [json.loads(line) for line in (tmp_path / "eval" / "hyps.jsonl").read_text().splitlines()]
    assert all(h["prompt_keywords"] for h in hyps)

    exported = export_checkpoint(folder, tmp_path / "export", llm=True, merge_lora=True)
    merged = AutoModelForCausalLM.from_pretrained(exported / "llm", local_files_only=True).eval()
    original, reloaded = load_speech_llm(folder), load_speech_llm(exported)
    ids = torch.tensor([original.model.tokenizer.encode("call Ilse")])
    torch.testing.assert_close(merged(ids).logits, original.model.llm(input_ids=ids).logits)
    batch = {"feats": torch.randn(2, 120, 80, generator=torch.Generator().manual_seed(0)),
             "feat_lens": torch.tensor([120, 90])}
    contexts = [{"keywords": ["Ilse"]}, None]
    with torch.no_grad():
        ours, theirs = (recognize(m.model, batch, DecodingConfig(), contexts) for m in (original, reloaded))
    assert [[h.tokens for h in nbest] for nbest in ours] == [[h.tokens for h in nbest] for nbest in theirs]
