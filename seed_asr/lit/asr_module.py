"""Stages ``align``, ``sft`` and ``context_sft``: cross-entropy on transcripts given audio (and context).

They differ only by config: what is frozen, where weights come from, how often a prompt carries
the utterance's context. Validation decodes and logs WER/CER per language and domain.
"""

from __future__ import annotations

import torch
from torch import nn

from seed_asr.artifacts.builders import build_speech_llm
from seed_asr.decoding.evaluation import TranscriptCollector
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.lit.stage_module import StageModule
from seed_asr.lit.validation import with_other_audio


class ASRModule(StageModule):
    """Training step: ``SpeechLLM(batch) -> loss``; validation: loss + decoding + WER.

    Stage options: ``context_mix`` (`StageModule.training_contexts`), ``val_use_context``; validation
    decodes with ``decoding``. ``copy_weight`` (with ``context_mix``) adds that weight times the copy
    loss: the batch's transcripts scored again in the same prompts without their audio, every name
    renamed to a newly invented one in transcript and context alike (`StageModule.renamed_samples`), so
    that only a listed name can be predicted: the LLM keeps learning to copy from the prompt while it
    learns to listen (the ``lm`` stage's ``fresh_names`` teaches the same without audio).
    """

    uses_tokenizer = True

    def build_model(self) -> nn.Module:
        self.init_step_options()
        return build_speech_llm(self.model_cfg, self.tokenizer)

    def init_step_options(self) -> None:
        """The copy loss's weight (validated), validation's decoding settings and transcript collector."""
        weight = self.stage.get("copy_weight") or 0.0
        if isinstance(weight, bool) or not 0.0 <= float(weight) < float("inf"):
            raise ValueError(f"stage.copy_weight must be a finite weight >= 0, got {weight!r}")
        if weight and not self.context_mix:
            raise ValueError(f"stage.copy_weight={weight} scores names from prompts: set stage.context_mix")
        self.copy_weight = float(weight)
        use_context = bool(self.stage.get("val_use_context"))
        self.decoding = DecodingConfig(**(self.decoding_cfg or {}), use_context=use_context)
        self.collector = TranscriptCollector()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        contexts = self.training_contexts(batch["metas"], batch_idx)
        out = self.model(batch, contexts=contexts)
        n = len(batch["texts"])
        loss = out["loss"]
        if self.copy_weight:
            texts, renamed = self.renamed_samples(batch["texts"], contexts, batch["metas"], batch_idx, 1.0)
            copy_loss = self.model.text_loss(texts, renamed)
            self.log("train/copy_loss", copy_loss, batch_size=n)
            loss = loss + self.copy_weight * copy_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/ce_loss", out["ce_loss"], batch_size=n)
        if "ctc_loss" in out:
            self.log("train/ctc_loss", out["ctc_loss"], batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        n = len(batch["texts"])
        out = self.model(batch, use_context=self.decoding.use_context)
        self.log("val/loss", out["ce_loss"], prog_bar=True, sync_dist=True, batch_size=n)
        # the same transcripts under other utterances' audio: close to val/loss while the model ignores audio
        other = self.model(with_other_audio(batch), use_context=self.decoding.use_context)
        self.log("val/loss_other_audio", other["ce_loss"], sync_dist=True, batch_size=n)
        hyps = transcripts(self.model, batch, self.decoding)
        self.collector.add(hyps, batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self.collector.compute()
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=False, rank_zero_only=False)
        self.collector.log_samples(self.loggers, "val", self.global_step)
        self.collector.reset()
