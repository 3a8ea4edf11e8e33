"""Stage ``lm``: text pre-training of the built-in LLM on training transcripts.

With ``stage.context_mix`` the transcripts come in the speech prompt without its audio tokens
(``[bos][context][instruction]<|speech|><|transcript|>text<eos>``, context drawn as in context SFT) and
only the transcript is scored: the LLM learns to take names from the dialogue history and the hot-word
list, the in-context copying a pretrained LLM brings from web text and a corpus-trained one lacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from seed_asr.lit.stage_module import StageModule
from seed_asr.lit.tokenizers import resolve_tokenizer


class LMModule(StageModule):
    """Next-token prediction on ``bos + text + eos`` (or on the transcript of a context prompt); the model
    is ``{"llm": causal LM}`` so that its weights load into the speech LLM's ``llm.`` parameters by name.

    Validation logs ``val/loss``, with each utterance's own context when ``context_mix`` is set, and then
    also ``val/loss_no_context``: the gap is what the context is worth to the LLM.
    """

    def build_model(self) -> nn.Module:
        self.tokenizer = resolve_tokenizer(self.cfg)
        prompt = instantiate(self.cfg.model.prompt) if self.context_mix else None
        self.prompt = prompt(tokenizer=self.tokenizer) if prompt else None
        llm = instantiate(self.cfg.model.llm)(tokenizer=self.tokenizer)
        if self.cfg.model.get("llm_gradient_checkpointing"):
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

    def _encode(self, texts: Sequence[str], contexts: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self._sequence(t, c) for t, c in zip(texts, contexts, strict=True)]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (ids, unscored) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            labels[i, unscored : len(ids)] = input_ids[i, unscored : len(ids)]
        return {
            k: v.to(self.device)
            for k, v in {"input_ids": input_ids, "attention_mask": mask, "labels": labels}.items()
        }

    def _loss(self, texts: Sequence[str], contexts: Sequence[Any]) -> torch.Tensor:
        return self.model["llm"](**self._encode(texts, contexts)).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        contexts = self.training_contexts(batch["metas"], batch_idx) or [None] * len(batch["texts"])
        loss = self._loss(batch["texts"], contexts)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["texts"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        n = len(batch["texts"])
        no_context = [None] * n
        own = [m.get("context") for m in batch["metas"]] if self.prompt is not None else no_context
        loss = self._loss(batch["texts"], own)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/ppl", math.exp(min(loss.item(), 20.0)), sync_dist=True, batch_size=n)
        if self.prompt is not None:
            no_context_loss = self._loss(batch["texts"], no_context)
            self.log("val/loss_no_context", no_context_loss, sync_dist=True, batch_size=n)
