"""ASR stages' copy loss (``stage.copy_weight``): the batch's transcripts scored again without their audio,
every name renamed to an invented one, added to the training loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stage_helpers import build

from seed_asr.models.speech_llm import SpeechLLM

MIX = {"relevant": 0.5, "none": 0.2, "irrelevant": 0.2, "distractors": 0.1}


def reference_text_nll(model: SpeechLLM, texts, contexts) -> float:
    """Plain torch, one unpadded sequence at a time: the LLM on the prompt's ids with no audio
    (before_audio + after_audio + transcript), mean NLL of the transcript (+ eos) tokens."""
    total, count = 0.0, 0
    for text, context in zip(texts, contexts, strict=True):
        ids = model.prompt.build(context, text)
        prefix = ids.before_audio + ids.after_audio
        seq = torch.tensor([prefix + ids.target])
        log_probs = model.base_llm(input_ids=seq).logits[0, :-1].float().log_softmax(-1)
        nll = -log_probs.gather(-1, seq[0, 1:, None])[:, 0]
        total += nll[len(prefix) - 1 :].sum().item()
        count += len(ids.target)
    return total / count


def test_text_loss_scores_transcripts_in_prompts_without_audio(tiny_corpus: Path, tmp_path: Path) -> None:
    module, batch = build("context_sft", tiny_corpus, tmp_path, stage_overrides={"context_mix": MIX})
    model = module.model.eval()
    contexts = module.training_contexts(batch["metas"], 0)
    assert any(contexts) and None in contexts
    with torch.no_grad():
        loss = model.text_loss(batch["texts"], contexts).item()
        assert loss == pytest.approx(reference_text_nll(model, batch["texts"], contexts), rel=1e-4)


def test_copy_weight_adds_the_renamed_transcripts_loss(tiny_corpus: Path, tmp_path: Path) -> None:
    overrides = {"context_mix": {"relevant": 1.0}, "copy_weight": 0.5}
    module, batch = build("context_sft", tiny_corpus, tmp_path, stage_overrides=overrides)
    module.eval()  # no dropout: the step and the references see the same function
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, value)
    contexts = module.training_contexts(batch["metas"], 0)
    texts, renamed = module.renamed_samples(batch["texts"], contexts, batch["metas"], 0, 1.0)
    named = 0
    for meta, text in zip(batch["metas"], texts, strict=True):
        entities = meta["context"]["entities"]
        named += bool(entities)
        assert all(entity not in text for entity in entities)
    assert named, "the tiny corpus has names"
    with torch.no_grad():
        loss = module.training_step(batch, 0).item()
        audio_loss = module.model(batch, contexts=contexts)["loss"].item()
        copy_loss = reference_text_nll(module.model, texts, renamed)
    assert logged["train/copy_loss"].item() == pytest.approx(copy_loss, rel=1e-4)
    assert loss == pytest.approx(audio_loss + 0.5 * copy_loss, rel=1e-4)


@pytest.mark.parametrize(("overrides", "error"), [
    ({"context_mix": MIX, "copy_weight": -1.0}, "copy_weight must be a finite weight"),
    ({"context_mix": MIX, "copy_weight": float("nan")}, "copy_weight must be a finite weight"),
    ({"context_mix": MIX, "copy_weight": True}, "copy_weight must be a finite weight"),
    ({"context_mix": None, "copy_weight": 1.0}, "set stage.context_mix"),
])
def test_bad_copy_weight_fails_when_the_model_is_built(tiny_corpus: Path, tmp_path: Path, overrides, error):
    with pytest.raises(ValueError, match=error):
        build("context_sft", tiny_corpus, tmp_path, stage_overrides=overrides)


def test_stages_without_the_copy_loss_refuse_a_weight_and_run_without_one(tiny_corpus: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="rl stage's MWER step has no copy loss"):
        build("rl", tiny_corpus, tmp_path, stage_overrides={"context_mix": MIX, "copy_weight": 1.0})
    module, _ = build("sft", tiny_corpus, tmp_path)  # stages whose config has no copy_weight: off
    assert module.copy_weight == 0.0
