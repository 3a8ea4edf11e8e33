"""Stage ``lm`` with ``context_mix``: transcripts in the speech prompt (without audio), only they scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stage_helpers import build

from seed_asr.config import compose_config
from seed_asr.train import train

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


def test_name_tokens_are_those_of_the_names(tiny_corpus: Path, tmp_path: Path) -> None:
    module, _ = build("lm", tiny_corpus, tmp_path, stage_overrides={"context_mix": MIX})
    tok = module.tokenizer
    examples = (("call Ranlaen Moreau on the mobile", ["Ranlaen", "Moreau"]), ("打万明哲的手机", ["万明哲"]))
    for text, names in examples:
        ids = tok.encode(text, add_special_tokens=False)
        mask = module.name_tokens(text, names)
        assert len(mask) == len(ids)
        marked = tok.decode([i for i, m in zip(ids, mask, strict=True) if m]).replace(" ", "")
        assert marked == "".join(names)
    assert not any(module.name_tokens("call me", ["Ranlaen"]))


def test_validation_logs_what_the_context_is_worth(tiny_corpus: Path, tmp_path: Path) -> None:
    module, batch = build("lm", tiny_corpus, tmp_path, stage_overrides={"context_mix": MIX})
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, value)
    with torch.no_grad():
        module.validation_step(batch, 0)
    n = len(batch["texts"])
    own = [m.get("context") for m in batch["metas"]]
    with torch.no_grad():  # references: token losses from the LLM's logits with plain torch
        cases = ((own, "val/loss", "val/loss_names"),
                 ([None] * n, "val/loss_no_context", "val/loss_names_no_context"))
        for contexts, loss_key, names_key in cases:
            encoded = module._encode(batch["texts"], contexts)
            logits = module.model["llm"](input_ids=encoded["input_ids"]).logits[:, :-1]
            labels = encoded["labels"][:, 1:]
            log_probs = torch.log_softmax(logits.float(), -1)
            nll = -log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            assert float(logged[loss_key]) == pytest.approx(nll[labels != -100].mean().item(), rel=1e-5)
            names = []
            for i, (text, meta) in enumerate(zip(batch["texts"], batch["metas"], strict=True)):
                start = int((labels[i] != -100).nonzero()[0])
                mask = module.name_tokens(text, meta["context"]["entities"])
                names += [nll[i, start + k].item() for k, m in enumerate(mask) if m]
            assert names, "the tiny corpus has names"
            assert logged[names_key].compute().item() == pytest.approx(sum(names) / len(names), rel=1e-5)


def test_fresh_names_rename_each_samples_names_in_its_text_and_context(tiny_corpus: Path, tmp_path: Path):
    overrides = {"context_mix": {"relevant": 1.0}, "fresh_names": 1.0}
    module, batch = build("lm", tiny_corpus, tmp_path, stage_overrides=overrides)
    texts, contexts, _ = module.training_samples(batch, 0)
    named = 0
    for meta, text, context in zip(batch["metas"], texts, contexts, strict=True):
        entities = meta["context"]["entities"]
        if not entities:
            assert text == meta["text"] and context == meta["context"]
            continue
        named += 1
        assert all(entity not in text for entity in entities)
        fresh = [k for k in context["keywords"] if k not in meta["context"]["keywords"]]
        assert len(fresh) == len(set(entities)) and all(name in text for name in fresh)
    assert named, "the tiny corpus has names"
    assert module.training_samples(batch, 0)[:2] == (texts, contexts)  # deterministic per batch
    assert module.training_samples(batch, 1)[0] != texts


def test_read_back_drills_copy_the_shown_hot_words(tiny_corpus: Path, tmp_path: Path) -> None:
    overrides = {"context_mix": {"relevant": 0.5, "none": 0.5}, "fresh_names": 1.0, "read_back": 1.0,
                 "read_back_instruction": "Read back."}
    module, batch = build("lm", tiny_corpus, tmp_path, stage_overrides=overrides)
    module.prompt.max_context_tokens = 24  # the budget drops trailing hot words of long lists
    texts, contexts, instructions = module.training_samples(batch, 0)
    renamed, _ = module.renamed_samples(batch["texts"], contexts, batch["metas"], 0, 1.0)
    drills = 0
    for i, context in enumerate(contexts):
        if not (context and context.get("keywords")):  # nothing to read back: the transcript as it is
            assert (texts[i], instructions[i]) == (renamed[i], None)
            continue
        drills += 1
        assert instructions[i] == "Read back."
        shown = module.prompt.context_text(context).split("<|keywords|>")[1].split(", ")
        assert texts[i].split(", ") == shown and shown == context["keywords"][: len(shown)]
        ids = module._encode(texts[i : i + 1], contexts[i : i + 1], instructions[i : i + 1])["input_ids"][0]
        decoded = module.tokenizer.decode(ids, skip_special_tokens=False)
        assert "Read back." in decoded and "Transcribe the speech." not in decoded
    cut = [len(c["keywords"]) > len(t.split(", ")) for c, t in zip(contexts, texts, strict=True) if c]
    assert drills and any(cut)
    assert module.training_samples(batch, 0) == (texts, contexts, instructions)


def fit_lm(corpus: Path, run: Path, *overrides: str):
    cfg = compose_config("train", ["stage=lm", "debug=tiny", f"paths.corpus_dir={corpus}",
                                   "trainer.max_steps=6", "trainer.val_check_interval=2",
                                   "stage.context_mix={relevant: 1.0}", *overrides], run)
    return train(cfg)[1]["trainer"]


@pytest.mark.parametrize(("threshold", "steps"), [(-100.0, 2), (100.0, 6)])
def test_the_run_stops_once_the_names_gain_is_reached(tiny_corpus: Path, tmp_path: Path, threshold, steps):
    """-100 nats is reached at the first validation (step 2), 100 never: the run goes on to max_steps."""
    trainer = fit_lm(tiny_corpus, tmp_path, f"stage.stop_at_name_gain={threshold}")
    assert trainer.global_step == steps
    metrics = trainer.callback_metrics
    gain = metrics["val/loss_names_no_context"] - metrics["val/loss_names"]
    assert metrics["val/name_gain"].item() == pytest.approx(gain.item(), abs=1e-6)


@pytest.mark.parametrize(("overrides", "error"), [
    ({"context_mix": MIX, "fresh_names": 1.5}, "fresh_names must be a probability"),
    ({"fresh_names": 0.5}, "set stage.context_mix"),
    ({"context_mix": MIX, "read_back": -0.1}, "read_back must be a probability"),
    ({"read_back": 0.5}, "set stage.context_mix"),
    ({"context_mix": MIX, "stop_at_name_gain": "high"}, "stop_at_name_gain must be a number"),
    ({"stop_at_name_gain": 0.5}, "set stage.context_mix"),
    ({"stop_at_name_gain": 0.0}, "set stage.context_mix"),
])
def test_bad_fresh_names_fail_when_the_model_is_built(tiny_corpus: Path, tmp_path: Path, overrides, error):
    with pytest.raises(ValueError, match=error):
        build("lm", tiny_corpus, tmp_path, stage_overrides=overrides)
