"""Does the model copy a hot word from its prompt? On a split's utterances whose own context lists an
entity the transcript says, with that (relevant) context in the prompt:

1. whether the entity survives the prompt's token budget (``max_context_tokens``), and at which prompt
   position its keyword starts;
2. how much attention the queries that predict the entity's transcript tokens pay to the entity's
   keyword tokens in the prompt, per layer and head, against as many tokens of the other (distractor)
   keywords: a copying head puts far more on the matching keyword;
3. the entity tokens' loss with the context and without it (same audio), beside the other tokens'.

``python -m seed_asr.demo.copying --ckpt runs/demo/context_sft --corpus runs/demo/corpus`` prints the
figures and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seed_asr.artifacts.loading import LoadedModel, load_speech_llm, pick_device
from seed_asr.config import compose_config
from seed_asr.eval import eval_batches
from seed_asr.losses.cross_entropy import IGNORE_INDEX
from seed_asr.text.prompts import PromptIds


@dataclass
class Sample:
    """One (utterance, entity) pair: query rows predicting the entity's transcript tokens, the entity
    keyword's prompt positions, the other keywords' prompt positions."""

    queries: list[int]
    match: list[int]
    others: list[int]


def _token_span(text: str, start: int, end: int, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the tokens whose character offsets overlap text[start:end]."""
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def _offsets(tokenizer: Any, text: str, ids: Sequence[int]) -> list[tuple[int, int]] | None:
    """Character offsets of `text`'s tokens, or None when tokenizing it alone does not give `ids`."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["offset_mapping"] if list(enc["input_ids"]) == list(ids) else None


def _transcript_layout(model: Any, context: Mapping | None, text: str, n_audio: int
                       ) -> tuple[PromptIds, int, list[tuple[int, int]] | None]:
    """The sample's prompt ids, the row of its first transcript token, and the transcript's token offsets."""
    ids = model.prompt.build(context, text)
    start = len(ids.before_audio) + n_audio + len(ids.after_audio)
    return ids, start, _offsets(model.tokenizer, text, ids.target[:-1])


def _entity_tokens(text: str, entity: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the transcript tokens of the first occurrence of `entity` in `text`."""
    at = text.find(entity)
    return _token_span(text, at, at + len(entity), offsets)


def locate(model: Any, context: Mapping, text: str, n_audio: int) -> tuple[list[Sample], dict[str, int]]:
    """The `Sample`s of one utterance (one per entity said and listed) and counts of entities that were
    listed, survived the budget, and could be located; positions are rows of the assembled sequence."""
    prompt = model.prompt
    ids, start, target_offsets = _transcript_layout(model, context, text, n_audio)
    fields = {"context": prompt.context_text(context), "instruction": prompt.instruction}
    before = prompt.before_template.format(**fields)
    bos = len(prompt.bos)
    before_offsets = _offsets(model.tokenizer, before, ids.before_audio[bos:])
    marker = prompt.keywords_template.split("{keywords}")[0]
    section = before.rfind(marker) if marker in before else -1
    spans: dict[str, list[int]] = {}
    if section >= 0 and before_offsets is not None:
        cursor = section + len(marker)
        for word in context.get("keywords") or []:
            at = before.find(word, cursor)
            if at < 0:
                break  # keywords are rendered in order: the rest did not fit
            spans[word] = [bos + i for i in _token_span(before, at, at + len(word), before_offsets)]
            cursor = at + len(word)
    counts = {"listed": 0, "survived": 0, "located": 0}
    samples = []
    for entity in context.get("entities") or []:
        if entity not in text or entity not in (context.get("keywords") or []):
            continue
        counts["listed"] += 1
        if entity not in spans:
            continue
        counts["survived"] += 1
        if target_offsets is None:
            continue
        tokens = _entity_tokens(text, entity, target_offsets)
        others = [p for word, span in spans.items() if word != entity for p in span]
        if tokens and others:
            counts["located"] += 1
            samples.append(Sample([start + j - 1 for j in tokens], spans[entity], others))
    return samples, counts


def _entity_rows(model: Any, context: Mapping | None, text: str, n_audio: int, entities: Sequence[str]
                 ) -> tuple[list[int], list[int]]:
    """Rows whose next token is an entity token / another transcript token (eos included)."""
    ids, start, offsets = _transcript_layout(model, context, text, n_audio)
    names = {j for e in entities if e in text for j in _entity_tokens(text, e, offsets or [])}
    rows = [start + j - 1 for j in range(len(ids.target))]
    return [r for j, r in enumerate(rows) if j in names], [r for j, r in enumerate(rows) if j not in names]


@torch.no_grad()
def measure_copying(loaded: LoadedModel, batches: Iterable[Mapping], max_utts: int) -> dict[str, Any]:
    """The three measurements over up to `max_utts` utterances of `batches` (loader batches with
    ``feats``, ``feat_lens``, ``texts``, ``metas``)."""
    model = loaded.model
    llm = model.base_llm
    llm.set_attn_implementation("eager")  # attention weights are returned by the eager path only
    layers, heads = llm.config.num_hidden_layers, llm.config.num_attention_heads
    match = torch.zeros(layers, heads, dtype=torch.float64)
    other = torch.zeros(layers, heads, dtype=torch.float64)
    counts = {"utterances": 0, "listed": 0, "survived": 0, "located": 0}
    nll = {key: [0.0, 0] for key in ("names_context", "names_none", "other_context", "other_none")}
    positions: list[int] = []
    for batch in batches:
        take = min(len(batch["texts"]), max_utts - counts["utterances"])
        if take <= 0:
            break
        texts = batch["texts"][:take]
        contexts = [(meta or {}).get("context") or {} for meta in batch["metas"][:take]]
        audio, audio_lens, _ = model.encode_audio(batch["feats"][:take], batch["feat_lens"][:take])
        for mode, ctxs in (("context", contexts), ("none", [None] * take)):
            inputs = model.build_inputs(audio, audio_lens, texts, ctxs)
            out = llm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                      position_ids=inputs.position_ids, output_attentions=mode == "context", use_cache=False)
            logp = out.logits.float().log_softmax(-1)
            labels = inputs.labels
            for i, (text, ctx) in enumerate(zip(texts, ctxs, strict=True)):
                entities = contexts[i].get("entities") or []
                names, rest = _entity_rows(model, ctx, text, int(audio_lens[i]), entities)
                for key, rows in ((f"names_{mode}", names), (f"other_{mode}", rest)):
                    for r in rows:
                        if labels[i, r + 1] != IGNORE_INDEX:
                            nll[key][0] -= float(logp[i, r, labels[i, r + 1]])
                            nll[key][1] += 1
            if mode != "context":
                continue
            attn = torch.stack(out.attentions, dim=1).double()  # (B, layers, heads, L, L)
            for i, (text, ctx) in enumerate(zip(texts, contexts, strict=True)):
                counts["utterances"] += 1
                samples, found = locate(model, ctx, text, int(audio_lens[i]))
                for key, value in found.items():
                    counts[key] += value
                for s in samples:
                    rows = attn[i][:, :, s.queries]  # (layers, heads, Q, L)
                    match += rows[..., s.match].sum(-1).mean(-1)
                    other += rows[..., s.others].sum(-1).mean(-1) * len(s.match) / len(s.others)
                    positions.append(s.match[0])
    located = max(counts["located"], 1)
    match, other = match / located, other / located
    best = match.argmax(dim=1)
    return {
        **counts,
        "survived_share": counts["survived"] / max(counts["listed"], 1),
        "keyword_position_mean": sum(positions) / max(len(positions), 1),
        "attention_match": match.tolist(),
        "attention_other": other.tolist(),
        "best_head": [{"layer": layer, "head": int(best[layer]), "match": float(match[layer, best[layer]]),
                       "other": float(other[layer, best[layer]])} for layer in range(layers)],
        "nll": {key: total / max(n, 1) for key, (total, n) in nll.items()},
    }


def split_batches(loaded: LoadedModel, corpus_dir: str, split: str, out: Path) -> Iterator[dict[str, Any]]:
    """The batches (with features) of the data config's `split` shard set ("val": the dev split, "test"),
    as `seed-asr eval` reads them."""
    cfg = compose_config("eval", [f"paths.corpus_dir={corpus_dir}", f"split={split}", "ckpt=unused",
                                  "data.num_workers=0"], out)
    return eval_batches(cfg, loaded, cfg.data[f"{split}_shards"], loaded.features.cmvn.mean.device, [])


def report_lines(result: Mapping[str, Any]) -> list[str]:
    """Plain-text summary of `measure_copying`'s result."""
    nll = result["nll"]
    lines = [f"utterances {result['utterances']}, entities said and listed {result['listed']}, survived the "
             f"budget {result['survived']} ({100 * result['survived_share']:.1f}%), "
             f"located {result['located']}; keyword starts at prompt position "
             f"{result['keyword_position_mean']:.1f} on average",
             f"entity-token loss: {nll['names_context']:.3f} nats with the context, {nll['names_none']:.3f} "
             f"without; other tokens {nll['other_context']:.3f} / {nll['other_none']:.3f}",
             "attention of the entity's queries on its keyword (best head per layer; vs as many distractor "
             "tokens):"]
    lines += [f"  layer {b['layer']} head {b['head']}: {b['match']:.3f} vs {b['other']:.3f}"
              for b in result["best_head"]]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a speech-LLM run folder or checkpoint")
    parser.add_argument("--corpus", required=True, help="the corpus folder (its split's shards)")
    parser.add_argument("--split", default="val", help="the data config's shard set: val (dev) or test")
    parser.add_argument("--max-utts", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="copying", help="folder of copying.json (and the eval CMVN)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_speech_llm(args.ckpt, pick_device(args.device))
    result = measure_copying(loaded, split_batches(loaded, args.corpus, args.split, out), args.max_utts)
    (out / "copying.json").write_text(json.dumps({"ckpt": args.ckpt, **result}, indent=1))
    print("\n".join(report_lines(result)))


if __name__ == "__main__":
    main()
