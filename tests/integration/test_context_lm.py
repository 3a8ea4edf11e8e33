"""Stage ``lm`` with ``context_mix``: transcripts in the speech prompt (without audio), only they scored."""

from __future__ import annotations

from pathlib import Path

import torch
from stage_helpers import build

MIX = {"relevant": 0.5, "none": 0.2, "irrelevant": 0.2, "distractors": 0.1}


def test_context_prompts_score_only_the_transcript(tiny_corpus: Path, tmp_path: Path) -> None:
    module, batch = build("lm", tiny_corpus, tmp_path, stage_overrides={"context_mix": MIX})
    contexts = module.training_contexts(batch["metas"], 0)
    assert any(contexts) and None in contexts  # the mixture draws contexts and no-context prompts
    encoded = module._encode(batch["texts"], contexts)
    prompt = module.prompt
    for i, (text, context) in enumerate(zip(batch["texts"], contexts, strict=True)):
        ids = prompt.build(context, text)  # the reference: the speech prompt's ids without audio
        expected = ids.before_audio + ids.after_audio + ids.target
        n = len(expected)
        assert encoded["input_ids"][i, :n].tolist() == expected
        assert encoded["attention_mask"][i].sum().item() == n
        labels = encoded["labels"][i]
        prefix = len(ids.before_audio) + len(ids.after_audio)
        assert (labels[:prefix] == -100).all() and (labels[n:] == -100).all()
        assert labels[prefix:n].tolist() == ids.target
        if context and context.get("keywords"):
            shown = prompt.tokenizer.decode(expected[:prefix])
            assert context["keywords"][0] in shown


def test_without_a_mixture_the_whole_text_is_scored(tiny_corpus: Path, tmp_path: Path) -> None:
    module, batch = build("lm", tiny_corpus, tmp_path)
    assert module.prompt is None and module.training_contexts(batch["metas"], 0) is None
    tok = module.tokenizer
    encoded = module._encode(batch["texts"], [None] * len(batch["texts"]))
    for i, text in enumerate(batch["texts"]):
        expected = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id]
        assert encoded["labels"][i, : len(expected)].tolist() == expected


def test_validation_logs_what_the_context_is_worth(tiny_corpus: Path, tmp_path: Path) -> None:
    module, batch = build("lm", tiny_corpus, tmp_path, stage_overrides={"context_mix": MIX})
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    with torch.no_grad():
        module.validation_step(batch, 0)
    own = [m.get("context") for m in batch["metas"]]
    n = len(batch["texts"])
    with torch.no_grad():
        assert logged["val/loss"] == module._loss(batch["texts"], own).item()
        assert logged["val/loss_no_context"] == module._loss(batch["texts"], [None] * n).item()
    assert logged["val/loss"] != logged["val/loss_no_context"]
