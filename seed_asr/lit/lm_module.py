"""Stage ``lm``: text pre-training of the built-in LLM on training transcripts."""

from __future__ import annotations

import math

import torch
from hydra.utils import instantiate
from torch import nn

from seed_asr.lit.stage_module import StageModule
from seed_asr.lit.tokenizers import resolve_tokenizer


class LMModule(StageModule):
    """Next-token prediction on ``bos + text + eos``; the model is ``{"llm": causal LM}`` so that
    its weights load into the speech LLM's ``llm.`` parameters by name."""

    def build_model(self) -> nn.Module:
        self.tokenizer = resolve_tokenizer(self.cfg)
        llm = instantiate(self.cfg.model.llm)(tokenizer=self.tokenizer)
        if self.cfg.model.get("llm_gradient_checkpointing"):
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return nn.ModuleDict({"llm": llm})

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        ids = [[tok.bos_token_id, *tok.encode(t, add_special_tokens=False), tok.eos_token_id] for t in texts]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        return {
            k: v.to(self.device)
            for k, v in {"input_ids": input_ids, "attention_mask": mask, "labels": labels}.items()
        }

    def _loss(self, batch: dict) -> torch.Tensor:
        return self.model["llm"](**self._encode(batch["texts"])).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["texts"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self._loss(batch)
        n = len(batch["texts"])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/ppl", math.exp(min(loss.item(), 20.0)), sync_dist=True, batch_size=n)
