"""Stage ``lm``: text pre-training of the built-in LLM on training transcripts.

With ``stage.context_mix`` the transcripts come in the speech prompt without its audio tokens
(``[bos][context][instruction]<|speech|><|transcript|>text<eos>``, context drawn as in context SFT) and
only the transcript is scored: the LLM learns to take names from the dialogue history and the hot-word
list, the in-context copying a pretrained LLM brings from web text and a corpus-trained one lacks. With
``stage.fresh_names`` a training sample's names are renamed to newly invented ones in its transcript and
context alike (`seed_asr.data.contexts.rename_entities`): a name is then never seen twice, so taking it
from the prompt is the only way to predict it, where the corpus' own names can be memorised instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric

from seed_asr.lit.stage_module import StageModule
from seed_asr.losses.cross_entropy import IGNORE_INDEX, next_token_nll


class LMModule(StageModule):
    """Next-token prediction on ``bos + text + eos`` (or on the transcript of a context prompt); the model
    is ``{"llm": causal LM}`` so that its weights load into the speech LLM's ``llm.`` parameters by name.

    Validation logs ``val/loss``, with each utterance's own context when ``context_mix`` is set, and then
    also ``val/loss_no_context`` and both over the tokens of the utterances' names (``context.entities``),
    ``val/loss_names`` and ``val/loss_names_no_context`` (means over all name tokens of the split, every
    rank's included): the gaps are what the context is worth to the LLM.
    """

    uses_tokenizer = True

    def build_model(self) -> nn.Module:
        share = self.stage.get("fresh_names") or 0.0
        if isinstance(share, bool) or not 0.0 <= float(share) <= 1.0:
            raise ValueError(f"stage.fresh_names must be a probability in [0, 1], got {share!r}")
        if share and not self.context_mix:
            raise ValueError(
                f"stage.fresh_names={share} renames names only a prompt can tell: set stage.context_mix"
            )
        self.fresh_names = float(share)
        prompt = instantiate(self.model_cfg.prompt) if self.context_mix else None
        self.prompt = prompt(tokenizer=self.tokenizer) if prompt else None
        if self.prompt is not None:
            self.name_losses = nn.ModuleDict({"own": MeanMetric(), "none": MeanMetric()})
        llm = instantiate(self.model_cfg.llm)(tokenizer=self.tokenizer)
        if self.model_cfg.get("llm_gradient_checkpointing"):
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return nn.ModuleDict({"llm": llm})

    def _sequence(self, text: str, context: Any) -> tuple[list[int], int]:
        """Token ids of one sample and how many leading ones are not scored."""
        tok = self.tokenizer
        if self.prompt is None:
            return [tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id], 0
        ids = self.prompt.build(context, text)
        prefix = ids.before_audio + ids.after_audio
        return prefix + ids.target, len(prefix)

    def name_tokens(self, text: str, names: Sequence[str]) -> list[bool]:
        """Per token of ``text`` (as the prompt encodes it): whether it overlaps an occurrence of a name."""
        spans = [(m, m + len(n)) for n in names if n for m in _occurrences(n, text)]
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [any(a < end and b > start for start, end in spans) for a, b in encoded["offset_mapping"]]

    def _encode(self, texts: Sequence[str], contexts: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self._sequence(t, c) for t, c in zip(texts, contexts, strict=True)]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, unscored) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            labels[i, unscored : len(ids)] = input_ids[i, unscored : len(ids)]
        return {
            k: v.to(self.device)
            for k, v in {"input_ids": input_ids, "attention_mask": mask, "labels": labels}.items()
        }

    def _token_nll(self, texts: Sequence[str], contexts: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative log-likelihood of each next token [B, T-1] and whether it is scored [B, T-1]."""
        encoded = self._encode(texts, contexts)
        llm = self.model["llm"]
        logits = llm(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        return next_token_nll(logits, encoded["labels"])

    def _loss(self, texts: Sequence[str], contexts: Sequence[Any]) -> torch.Tensor:
        nll, scored = self._token_nll(texts, contexts)
        return nll[scored].mean()

    def _name_masks(self, batch: dict) -> list[list[bool]]:
        """Per sample, `name_tokens` of its transcript for its ``context.entities``."""
        return [
            self.name_tokens(text, (meta.get("context") or {}).get("entities") or [])
            for text, meta in zip(batch["texts"], batch["metas"], strict=True)
        ]

    def _losses(
        self, texts: Sequence[str], contexts: Sequence[Any], name_masks: Sequence[Sequence[bool]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss over the transcripts, and the losses of their name tokens [N] (N may be 0)."""
        nll, scored = self._token_nll(texts, contexts)
        names = torch.zeros_like(scored)
        for i, mask in enumerate(name_masks):
            first = int(scored[i].nonzero()[0])  # the transcript's first token
            names[i, first : first + len(mask)] = torch.tensor(mask, dtype=torch.bool)
        return nll[scored].mean(), nll[names]

    def training_samples(self, batch: dict, batch_idx: int) -> tuple[list[str], list[Any]]:
        """The transcripts and prompt contexts a training batch is scored on: contexts drawn by
        ``context_mix``, and with probability ``fresh_names`` per sample that has names, its names renamed
        (`StageModule.renamed_samples`)."""
        texts = list(batch["texts"])
        contexts = self.training_contexts(batch["metas"], batch_idx) or [None] * len(texts)
        if not self.fresh_names:
            return texts, contexts
        return self.renamed_samples(texts, contexts, batch["metas"], batch_idx, self.fresh_names)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        texts, contexts = self.training_samples(batch, batch_idx)
        loss = self._loss(texts, contexts)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["texts"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        n = len(batch["texts"])
        no_context = [None] * n
        if self.prompt is None:
            loss = self._loss(batch["texts"], no_context)
        else:
            masks = self._name_masks(batch)
            own = [m.get("context") for m in batch["metas"]]
            loss, names = self._losses(batch["texts"], own, masks)
            loss_no_context, names_no_context = self._losses(batch["texts"], no_context, masks)
            self.log("val/loss_no_context", loss_no_context, sync_dist=True, batch_size=n)
            self.name_losses["own"].update(names)
            self.name_losses["none"].update(names_no_context)
            self.log("val/loss_names", self.name_losses["own"], batch_size=n)
            self.log("val/loss_names_no_context", self.name_losses["none"], batch_size=n)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/ppl", math.exp(min(loss.item(), 20.0)), sync_dist=True, batch_size=n)


def _occurrences(name: str, text: str) -> list[int]:
    """Start offsets of ``name`` in ``text``."""
    starts, at = [], text.find(name)
    while at >= 0:
        starts.append(at)
        at = text.find(name, at + 1)
    return starts
