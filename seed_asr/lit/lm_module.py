"""Stage ``lm``: text pre-training of the built-in LLM on training transcripts.

With ``stage.context_mix`` the transcripts come in the speech prompt without its audio tokens
(``[bos][context][instruction]<|speech|><|transcript|>text<eos>``, context drawn as in context SFT) and
only the transcript is scored: the LLM learns to take names from the dialogue history and the hot-word
list, the in-context copying a pretrained LLM brings from web text and a corpus-trained one lacks. With
``stage.fresh_names`` a training sample's names are renamed to newly invented ones in its transcript and
context alike (`seed_asr.data.contexts.rename_entities`): a name is then never seen twice, so taking it
from the prompt is the only way to predict it, where the corpus' own names can be memorised instead.
With ``stage.read_back`` some samples become drills whose transcript is the prompt's hot-word list read
back under another instruction: every token a copy. ``stage.stop_at_name_gain`` ends the run once the
prompt saves that many nats per name token on dev (``val/name_gain``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping
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
    rank's included): the gaps are what the context is worth to the LLM, the names' as ``val/name_gain``.
    """

    uses_tokenizer = True

    def build_model(self) -> nn.Module:
        self.fresh_names = self._prompt_option("fresh_names", _probability(self.stage, "fresh_names"),
                                               "renames names only a prompt can tell")
        self.read_back = self._prompt_option("read_back", _probability(self.stage, "read_back"),
                                             "reads back the prompt's hot words")
        gain = self.stage.get("stop_at_name_gain")
        if gain is not None and (isinstance(gain, bool) or not isinstance(gain, int | float)):
            raise ValueError(f"stage.stop_at_name_gain must be a number of nats (or null), got {gain!r}")
        self._prompt_option("stop_at_name_gain", gain, "watches what the prompt is worth on names",
                            on=gain is not None)  # 0 nats is a threshold too
        prompt = instantiate(self.model_cfg.prompt) if self.context_mix else None
        self.prompt = prompt(tokenizer=self.tokenizer) if prompt else None
        if self.prompt is not None:
            self.name_losses = nn.ModuleDict({"own": MeanMetric(), "none": MeanMetric()})
        llm = instantiate(self.model_cfg.llm)(tokenizer=self.tokenizer)
        if self.model_cfg.get("llm_gradient_checkpointing"):
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return nn.ModuleDict({"llm": llm})

    def _prompt_option(self, key: str, value: Any, what: str, on: bool | None = None) -> Any:
        """``value`` of ``stage.<key>``, an option that needs ``stage.context_mix`` when it is on (``on``;
        default: when the value is truthy); raises when it is on without one."""
        if (bool(value) if on is None else on) and not self.context_mix:
            raise ValueError(f"stage.{key}={value} {what}: set stage.context_mix")
        return value

    def configure_callbacks(self) -> list[Callback]:
        """With ``stage.stop_at_name_gain``: stop when ``val/name_gain`` reaches it (at a validation)."""
        gain = self.stage.get("stop_at_name_gain")
        if gain is None:
            return []
        return [EarlyStopping(monitor="val/name_gain", mode="max", stopping_threshold=float(gain),
                              patience=2**31, check_on_train_epoch_end=False, verbose=True)]

    def _sequence(self, text: str, context: Any, instruction: str | None = None) -> tuple[list[int], int]:
        """Token ids of one sample and how many leading ones are not scored."""
        tok = self.tokenizer
        if self.prompt is None:
            return [tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id], 0
        ids = self.prompt.build(context, text, instruction)
        prefix = ids.before_audio + ids.after_audio
        return prefix + ids.target, len(prefix)

    def name_tokens(self, text: str, names: Sequence[str]) -> list[bool]:
        """Per token of ``text`` (as the prompt encodes it): whether it overlaps an occurrence of a name."""
        spans = [(m, m + len(n)) for n in names if n for m in _occurrences(n, text)]
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [any(a < end and b > start for start, end in spans) for a, b in encoded["offset_mapping"]]

    def _encode(
        self, texts: Sequence[str], contexts: Sequence[Any], instructions: Sequence[str | None] | None = None
    ) -> dict[str, torch.Tensor]:
        instructions = instructions or [None] * len(texts)
        rows = [self._sequence(*sample) for sample in zip(texts, contexts, instructions, strict=True)]
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

    def _token_nll(
        self, texts: Sequence[str], contexts: Sequence[Any], instructions: Sequence[str | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative log-likelihood of each next token [B, T-1] and whether it is scored [B, T-1]."""
        encoded = self._encode(texts, contexts, instructions)
        llm = self.model["llm"]
        logits = llm(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        return next_token_nll(logits, encoded["labels"])

    def _loss(
        self, texts: Sequence[str], contexts: Sequence[Any], instructions: Sequence[str | None] | None = None
    ) -> torch.Tensor:
        nll, scored = self._token_nll(texts, contexts, instructions)
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

    def training_samples(
        self, batch: dict, batch_idx: int
    ) -> tuple[list[str], list[Any], list[str | None]]:
        """The transcripts, prompt contexts and instructions (None: the prompt's own) a training batch is
        scored on: contexts drawn by ``context_mix``; with probability ``fresh_names`` per sample that has
        names, its names renamed (`StageModule.renamed_samples`); then with probability ``read_back`` per
        sample whose prompt shows hot words, a drill: ``read_back_instruction`` and the shown hot words
        as its transcript. Deterministic per batch."""
        texts = list(batch["texts"])
        contexts = self.training_contexts(batch["metas"], batch_idx) or [None] * len(texts)
        if self.fresh_names:
            metas = batch["metas"]
            texts, contexts = self.renamed_samples(texts, contexts, metas, batch_idx, self.fresh_names)
        instructions: list[str | None] = [None] * len(texts)
        if self.read_back:
            rng = self.batch_rng(batch_idx, "read_back")
            for i, context in enumerate(contexts):
                shown = self.prompt.shown_keywords(context)
                if shown and rng.random() < self.read_back:
                    texts[i] = self.prompt.keyword_separator.join(shown)
                    instructions[i] = str(self.stage.read_back_instruction)
        return texts, contexts, instructions

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(*self.training_samples(batch, batch_idx))
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

    def on_validation_epoch_end(self) -> None:
        """Log ``val/name_gain``: nats per name token the utterances' own contexts save (if dev has names)."""
        if self.prompt is not None and self.name_losses["own"].update_called:
            gain = self.name_losses["none"].compute() - self.name_losses["own"].compute()
            self.log("val/name_gain", gain, prog_bar=True)


def _occurrences(name: str, text: str) -> list[int]:
    """Start offsets of ``name`` in ``text``."""
    starts, at = [], text.find(name)
    while at >= 0:
        starts.append(at)
        at = text.find(name, at + 1)
    return starts


def _probability(stage: Any, key: str) -> float:
    """``stage.<key>`` as a probability (absent or null: 0).

    Raises:
        ValueError: naming the key, when the value is not a number in [0, 1].
    """
    value = stage.get(key) or 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"stage.{key} must be a probability in [0, 1], got {value!r}")
    return float(value)
