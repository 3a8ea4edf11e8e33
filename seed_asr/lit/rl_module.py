"""Stage ``rl``: MWER-style sequence training with a keyword-weighted WER as the risk (Seed-ASR stage 5).

Per training batch: an N-best list from the model itself (beam search or temperature sampling, no
gradient, in eval mode), each hypothesis' risk (WER with errors on the utterance's keywords weighted
more), then ``loss = mwer_loss(log P(y_i | x[, c]), risk) + ce_weight * CE(reference)``. Decoding
runs on each rank alone (no collective), and the loss always reaches the same parameters, so ranks
stay in step under DDP and DeepSpeed whatever their N-best lists look like. Validation is the ASR
stages' (decoding + WER).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from seed_asr.decoding.recognize import DecodingConfig, recognize
from seed_asr.decoding.sampling import sample
from seed_asr.lit.asr_module import ASRModule
from seed_asr.losses.mwer import expected_risk, mwer_loss, nbest_risks, pad_nbest


@dataclass(frozen=True)
class MWERConfig:
    """Options of the RL stage (``stage.rl``).

    Args:
        nbest: hypotheses per utterance, N.
        nbest_source: "beam" (beam search, beam_size >= N) or "sampling" (N temperature samples).
        beam_size: beam width when nbest_source is "beam".
        temperature: sampling temperature when nbest_source is "sampling".
        ce_weight: lambda, weight of the cross-entropy on the reference.
        keyword_weight: weight of errors on keyword units in the risk (1: plain WER).
        keyword_field: which list of the utterance's context holds its keywords ("keywords": the
            hot-word list, as B-WER uses it; "entities": only the ones in the reference).
    """

    nbest: int = 4
    nbest_source: Literal["beam", "sampling"] = "beam"
    beam_size: int = 4
    temperature: float = 1.0
    ce_weight: float = 0.05
    keyword_weight: float = 3.0
    keyword_field: str = "keywords"

    def __post_init__(self) -> None:
        if self.nbest_source not in ("beam", "sampling"):
            raise ValueError(f"stage.rl.nbest_source must be 'beam' or 'sampling', got {self.nbest_source!r}")
        if self.nbest < 2:
            raise ValueError(f"stage.rl.nbest must be >= 2 (MWER compares hypotheses), got {self.nbest}")
        if self.nbest_source == "beam" and self.beam_size < self.nbest:
            raise ValueError(f"stage.rl.beam_size ({self.beam_size}) must be >= nbest ({self.nbest})")
        if self.ce_weight < 0 or self.keyword_weight < 0:
            raise ValueError(
                f"stage.rl.ce_weight ({self.ce_weight}) and keyword_weight ({self.keyword_weight})"
                " must be >= 0"
            )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the body with `model` in eval mode (no dropout), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def nbest_ids(
    model, batch: Mapping, cfg: MWERConfig, decoding: DecodingConfig, use_context: bool
) -> list[list[list[int]]]:
    """The model's own N-best token lists of a batch (eval mode, no gradient).

    Args:
        model: a ``SpeechLLM``.
        batch: ``feats`` (B, T, 80), ``feat_lens`` (B,), ``metas``.
        cfg: RL options (source, N, beam size, temperature).
        decoding: length penalty and repetition guard of beam search.
        use_context: condition on the utterances' contexts.

    Returns:
        B lists of at most N hypotheses (sampling may repeat one).
    """
    with eval_mode(model):
        if cfg.nbest_source == "beam":
            beam = replace(
                decoding, method="beam", beam_size=cfg.beam_size, nbest=cfg.nbest, use_context=use_context
            )
            lists = recognize(model, batch, beam)
        else:
            lists = sample(model, batch, cfg.nbest, cfg.temperature, use_context)
    return [[h.tokens for h in hyps] for hyps in lists]


def mwer_step(
    model, batch: Mapping, cfg: MWERConfig, decoding: DecodingConfig, use_context: bool = False
) -> dict[str, torch.Tensor]:
    """The RL training loss of one batch and its parts.

    The reference is scored in the same LLM pass as the hypotheses (column N of
    ``SpeechLLM.score``); minus its summed log-probability over the batch's transcript + eos tokens is
    exactly ``SpeechLLM.forward``'s ``ce_loss``, without a second encoder pass.

    Args:
        model: a ``SpeechLLM`` in training mode.
        batch: ``feats`` (B, T, 80), ``feat_lens`` (B,), ``texts``, ``metas`` (``lang``, ``context``).
        cfg: RL options.
        decoding: beam search settings besides beam size and N (length penalty, repetition guard).
        use_context: generate and score with each utterance's context in the prompt.

    Returns:
        ``loss`` (mwer_loss + ce_weight * ce_loss), ``mwer_loss``, ``ce_loss``, and detached
        ``expected_wer`` / ``expected_risk`` (batch means under the renormalised N-best distribution)
        and ``nbest_size`` (mean distinct hypotheses per utterance).
    """
    hyps, mask = pad_nbest(nbest_ids(model, batch, cfg, decoding, use_context), cfg.nbest)
    metas = batch.get("metas") or [{}] * len(hyps)
    texts = [[model.prompt.decode(h) for h in row] for row in hyps]
    keywords = [list(((m or {}).get("context") or {}).get(cfg.keyword_field) or []) for m in metas]
    langs = [str((m or {}).get("lang") or "en") for m in metas]
    refs = list(batch["texts"])
    risk = nbest_risks(texts, refs, keywords, langs, cfg.keyword_weight)
    wer = nbest_risks(texts, refs, keywords, langs, 1.0)

    ref_ids = [model.prompt.encode(t) for t in refs]
    logp = model.score(batch, [[*row, ref] for row, ref in zip(hyps, ref_ids, strict=True)], use_context)
    ce_loss = -logp[:, -1].sum() / sum(len(model.prompt.target_ids(r)) for r in ref_ids)
    hyp_logp = logp[:, :-1]
    risk, wer, mask = risk.to(logp.device), wer.to(logp.device), mask.to(logp.device)
    loss_mwer = mwer_loss(hyp_logp, risk, mask)
    return {
        "loss": loss_mwer + cfg.ce_weight * ce_loss,
        "mwer_loss": loss_mwer,
        "ce_loss": ce_loss,
        "expected_wer": expected_risk(hyp_logp.detach(), wer, mask).mean(),
        "expected_risk": expected_risk(hyp_logp.detach(), risk, mask).mean(),
        "nbest_size": mask.sum(dim=1).float().mean(),
    }


class RLModule(ASRModule):
    """Training step: ``mwer_step``; validation as ``ASRModule`` (decoding + WER).

    Stage options: ``rl`` (an ``MWERConfig``), ``use_context`` (N-best lists and
    scores conditioned on each utterance's own context: true after context SFT).
    """

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if self.copy_weight:
            raise ValueError(f"stage.copy_weight={self.copy_weight}: the rl stage's MWER step has no copy "
                             "loss")
        self.mwer = MWERConfig(**self.stage.rl)
        return model

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # beam search keeps the validation decoding's length penalty and repetition guard
        use_context = bool(self.stage.get("use_context"))
        out = mwer_step(self.model, batch, self.mwer, self.decoding, use_context=use_context)
        n = len(batch["texts"])
        for key, value in out.items():
            self.log(f"train/{key}", value, prog_bar=key in ("loss", "expected_wer"), batch_size=n)
        return out["loss"]
