"""SpeechLLM (AcLLM): audio encoder -> converter -> audio tokens in an LLM prompt -> transcript."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seed_asr.losses.cross_entropy import IGNORE_INDEX
from seed_asr.losses.ctc import ctc_loss
from seed_asr.models.converter import Converter
from seed_asr.models.encoder import EncoderOutput, padding_mask
from seed_asr.text import phonemes
from seed_asr.text.prompts import PromptBuilder, PromptIds


@dataclass
class LLMInputs:
    """A batch of LLM inputs with the audio tokens spliced in.

    Attributes:
        inputs_embeds: (B, L, H) token and audio embeddings.
        attention_mask: (B, L) 1 at real positions, 0 at padding.
        labels: (B, L) target token ids at transcript (+ eos) positions, -100 elsewhere; aligned with
            the inputs as in Hugging Face (position t predicts labels[t] from the logits at t - 1).
        position_ids: (B, L) 0, 1, ... over the real positions (0 on left padding).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor


class SpeechLLM(nn.Module):
    """Encoder + converter + causal LLM with one prompt builder for training and decoding.

    Sub-modules are named `encoder`, `converter`, `llm`, `ctc_head` (freeze regexes match these).

    Args:
        encoder: ConformerEncoder or HFEncoder (has `d_model`, `subsampling`, forward -> EncoderOutput).
        converter: builds the Converter given `in_dim` and `out_dim` (e.g. a Hydra partial).
        tokenizer: the LLM's tokenizer.
        llm: builds the causal LM given `tokenizer` (`build_qwen2` or `load_causal_lm` partial).
        prompt: builds the PromptBuilder given `tokenizer`.
        lora: wraps the LLM with adapters (`apply_lora` partial), or None.
        encoder_layer: which block's output feeds the converter (-1: the last; Seed-ASR found an
            intermediate one, ~25 of 32, most useful).
        ctc_weight: weight of an auxiliary CTC loss on the last encoder block (0 disables the head).
        ctc_units: the CTC head's labels: "tokens" (the tokenizer's vocabulary, the pad token as blank)
            or "phonemes" (each record's IPA `phonemes`, `seed_asr.text.phonemes`; the built-in corpus
            writes them, and they are learnt much sooner than characters of a large script).
        max_tokens_per_second: transcript tokens per second of audio allowed when decoding.
        max_new_tokens_margin: extra tokens allowed on top.
        frame_shift_s: fbank hop (10 ms), to turn audio tokens back into seconds.
        llm_gradient_checkpointing: Hugging Face gradient checkpointing in the LLM.
    """

    def __init__(
        self,
        encoder: nn.Module,
        converter: Callable[..., Converter],
        tokenizer: PreTrainedTokenizerBase,
        llm: Callable[..., PreTrainedModel],
        prompt: Callable[..., PromptBuilder],
        lora: Callable[[PreTrainedModel], PeftModel] | None = None,
        encoder_layer: int = -1,
        ctc_weight: float = 0.0,
        ctc_units: str = "tokens",
        max_tokens_per_second: float = 20.0,
        max_new_tokens_margin: int = 10,
        frame_shift_s: float = 0.01,
        llm_gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.prompt = prompt(tokenizer=tokenizer)
        base_llm = llm(tokenizer=tokenizer)
        if llm_gradient_checkpointing:
            base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.llm = lora(base_llm) if lora is not None else base_llm
        self.converter = converter(in_dim=encoder.d_model, out_dim=base_llm.config.hidden_size)
        self.encoder_layer = encoder_layer
        if ctc_units not in ("tokens", "phonemes"):
            raise ValueError(f"ctc_units must be 'tokens' or 'phonemes', got {ctc_units!r}")
        self.ctc_weight = ctc_weight
        self.ctc_units = ctc_units
        classes = len(tokenizer) if ctc_units == "tokens" else phonemes.NUM_CLASSES
        self.ctc_head = nn.Linear(encoder.d_model, classes) if ctc_weight > 0 else None
        self.max_tokens_per_second = max_tokens_per_second
        self.max_new_tokens_margin = max_new_tokens_margin
        self.frame_shift_s = frame_shift_s

    @property
    def base_llm(self) -> PreTrainedModel:
        """The Hugging Face causal LM (inside the peft wrapper when LoRA is on)."""
        return self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm

    # ---- audio -------------------------------------------------------------------------------
    def encode_audio(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderOutput]:
        """Audio tokens of a fbank batch.

        Args:
            feats: (B, T, 80) fbank, right-padded.
            feat_lens: (B,) valid frames.

        Returns:
            audio_embeds (B, A, H), audio_lens (B,), and the encoder output (B, T', D).
        """
        enc = self.encoder(feats, feat_lens, output_hidden_states=self.encoder_layer != -1)
        if self.encoder_layer == -1:
            hidden = enc.hidden
        else:
            n = len(enc.hidden_states)
            if not -n <= self.encoder_layer < n:
                raise ValueError(f"encoder_layer={self.encoder_layer} but the encoder has {n} blocks")
            hidden = enc.hidden_states[self.encoder_layer]
        audio_embeds, audio_lens = self.converter(hidden, enc.lens)
        return audio_embeds, audio_lens, enc

    def max_new_tokens(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """(B,) audio tokens -> (B,) cap on generated tokens: tokens/s x duration + margin."""
        seconds = audio_lens.float() * self.converter.splice * self.encoder.subsampling * self.frame_shift_s
        return (seconds * self.max_tokens_per_second).ceil().long() + self.max_new_tokens_margin

    # ---- prompts -----------------------------------------------------------------------------
    def _prompts(
        self, texts: Sequence[str] | None, contexts: Sequence[Mapping | None], batch_size: int
    ) -> list[PromptIds]:
        if len(contexts) != batch_size or (texts is not None and len(texts) != batch_size):
            raise ValueError(
                f"need {batch_size} texts and contexts, got {texts and len(texts)}, {len(contexts)}"
            )
        texts = texts if texts is not None else [None] * batch_size
        return [self.prompt.build(c, t) for c, t in zip(contexts, texts, strict=True)]

    def _assemble(
        self,
        audio_embeds: torch.Tensor,
        audio_lens: torch.Tensor,
        prompts: Sequence[PromptIds],
        left_pad: bool,
    ) -> LLMInputs:
        """Splice each sample's audio tokens into its prompt ids and pad the batch."""
        device = audio_embeds.device
        rows, audio_rows, label_rows = [], [], []
        for p, n_audio in zip(prompts, audio_lens.tolist(), strict=True):
            target = p.target or []
            n_prefix = len(p.before_audio) + n_audio + len(p.after_audio)
            rows.append(p.before_audio + [self.tokenizer.pad_token_id] * n_audio + p.after_audio + target)
            n_after = len(p.after_audio) + len(target)
            audio_rows.append([False] * len(p.before_audio) + [True] * n_audio + [False] * n_after)
            label_rows.append([IGNORE_INDEX] * n_prefix + target)
        length = max(len(r) for r in rows)

        def pad(seqs: list[list], value: Any, dtype: torch.dtype) -> torch.Tensor:
            fill = lambda s: [value] * (length - len(s))
            padded = [fill(s) + s if left_pad else s + fill(s) for s in seqs]
            return torch.tensor(padded, dtype=dtype, device=device)

        ids = pad(rows, self.tokenizer.pad_token_id, torch.long)
        is_audio = pad(audio_rows, False, torch.bool)
        mask = pad([[1] * len(r) for r in rows], 0, torch.long)
        embed = self.llm.get_input_embeddings()
        audio = audio_embeds[padding_mask(audio_lens, audio_embeds.shape[1])].to(embed.weight.dtype)
        inputs_embeds = embed(ids).masked_scatter(is_audio[..., None], audio)
        return LLMInputs(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            labels=pad(label_rows, IGNORE_INDEX, torch.long),
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        )

    def build_inputs(
        self,
        audio_embeds: torch.Tensor,
        audio_lens: torch.Tensor,
        texts: Sequence[str] | None,
        contexts: Sequence[Mapping | None],
    ) -> LLMInputs:
        """LLM inputs for training (texts given: right padding, labels on transcript + eos) or for
        decoding (texts None: the prompt prefix ending at the transcript marker, LEFT padded, so every
        sample's next token is predicted at the last position; labels all -100).

        Args:
            audio_embeds: (B, A, H) audio tokens; audio_lens: (B,) valid ones.
            texts: B transcripts, or None.
            contexts: B context dicts ({history, keywords}) or None each.
        """
        prompts = self._prompts(texts, contexts, audio_embeds.shape[0])
        return self._assemble(audio_embeds, audio_lens, prompts, left_pad=texts is None)

    # ---- scoring -----------------------------------------------------------------------------
    def _target_log_probs(self, inputs: LLMInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of the label tokens.

        Runs the LLM body on all positions but its output head only where a label follows (the
        (B, L, vocab) logits of a large vocabulary would dominate memory).

        Returns:
            (B, L - 1) log P(labels[:, t + 1] | inputs[:, :t + 1]) (0 where no label) and the
            (B, L - 1) bool mask of label positions.
        """
        hidden = self.base_llm.get_decoder()(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            use_cache=False,
        ).last_hidden_state
        targets = inputs.labels[:, 1:]
        selected = targets != IGNORE_INDEX
        logits = self.base_llm.get_output_embeddings()(hidden[:, :-1][selected]).float()
        token_logp = logits.log_softmax(-1).gather(-1, targets[selected][:, None]).squeeze(-1)
        out = torch.zeros(targets.shape, dtype=token_logp.dtype, device=token_logp.device)
        return out.masked_scatter(selected, token_logp), selected

    def transcript_nll(
        self,
        audio_embeds: torch.Tensor,
        audio_lens: torch.Tensor,
        texts: Sequence[str],
        contexts: Sequence[Mapping | None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean negative log-likelihood of the transcripts (+ eos) in their speech prompts, and the
        number of those tokens.

        Args:
            audio_embeds: (B, A, H) audio tokens; audio_lens: (B,) valid ones.
            texts: B transcripts; contexts: B context dicts or None each.
        """
        inputs = self.build_inputs(audio_embeds, audio_lens, texts, contexts)
        token_logp, selected = self._target_log_probs(inputs)
        n_tokens = selected.sum()
        return -token_logp.sum() / n_tokens, n_tokens

    def text_loss(self, texts: Sequence[str], contexts: Sequence[Mapping | None]) -> torch.Tensor:
        """Cross-entropy of transcripts in their speech prompts with no audio tokens at all
        (``[context][markers] transcript eos``, as the ``lm`` stage scores them): what the LLM predicts
        from the prompt alone. Mean over transcript + eos tokens."""
        n = len(texts)
        hidden = self.base_llm.config.hidden_size
        device = self.llm.get_input_embeddings().weight.device
        no_audio = torch.zeros((n, 0, hidden), device=device)
        no_lens = torch.zeros(n, dtype=torch.long, device=device)
        return self.transcript_nll(no_audio, no_lens, texts, contexts)[0]

    @staticmethod
    def prompt_contexts(
        batch: Mapping, use_context: bool, contexts: Sequence[Mapping | None] | None = None
    ) -> list[Mapping | None]:
        """The B prompt contexts: `contexts` when given, else the batch's own (use_context) or none."""
        n = len(batch["feat_lens"])
        if contexts is not None:
            if len(contexts) != n:
                raise ValueError(f"contexts: need one per utterance ({n}), got {len(contexts)}")
            return list(contexts)
        if not use_context:
            return [None] * n
        return [(meta or {}).get("context") for meta in batch.get("metas") or [None] * n]

    def forward(
        self,
        batch: Mapping,
        use_context: bool = False,
        contexts: Sequence[Mapping | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training loss of a batch.

        Args:
            batch: `feats` (B, T, 80), `feat_lens` (B,), `texts` (B strings), `metas` (context dicts).
            use_context: put each sample's `metas[i]["context"]` into its prompt.
            contexts: B explicit prompt contexts (None each for no context); override use_context.

        Returns:
            loss (ce_loss + ctc_weight * ctc_loss), ce_loss (mean over transcript + eos tokens),
            ctc_loss (when the CTC head is on, reaches a trainable parameter and has labels: phoneme
            labels missing outside training skip it), n_tokens (tokens under the cross-entropy).
        """
        audio_embeds, audio_lens, enc = self.encode_audio(batch["feats"], batch["feat_lens"])
        ce_loss, n_tokens = self.transcript_nll(
            audio_embeds, audio_lens, batch["texts"], self.prompt_contexts(batch, use_context, contexts)
        )
        out = {"ce_loss": ce_loss, "n_tokens": n_tokens, "loss": ce_loss}
        targets = self.ctc_targets(batch) if self.ctc_trains_something else None
        if targets is not None:
            out["ctc_loss"] = self.ctc_loss(enc, targets)
            out["loss"] = ce_loss + self.ctc_weight * out["ctc_loss"]
        return out

    @property
    def ctc_trains_something(self) -> bool:
        """Whether the CTC head is on and its loss reaches a trainable parameter (head or encoder); the
        align stage freezes both, so its loss would be a constant costing compute and burying the curve."""
        if self.ctc_head is None:
            return False
        return any(p.requires_grad for m in (self.ctc_head, self.encoder) for p in m.parameters())

    @property
    def ctc_blank(self) -> int:
        """The CTC head's blank label: the pad token (tokens) or `phonemes.BLANK`."""
        return self.tokenizer.pad_token_id if self.ctc_units == "tokens" else phonemes.BLANK

    def ctc_targets(self, batch: Mapping) -> list[list[int]] | None:
        """The CTC labels of each sample (`ctc_units`); None when phonemes are missing outside training.

        Raises:
            ValueError: in training, a sample's record has no `phonemes` (ctc_units="phonemes").
        """
        if self.ctc_units == "tokens":
            return [self.prompt.encode(t) for t in batch["texts"]]
        metas = batch.get("metas") or [{}] * len(batch["texts"])
        keys = batch.get("keys") or ["?"] * len(metas)
        missing = [k for k, m in zip(keys, metas, strict=True) if not isinstance(m.get("phonemes"), str)]
        if missing and self.training:
            raise ValueError(
                f"model.ctc_units=phonemes but the records of {missing[:3]} have no 'phonemes' (the built-in "
                "corpus writes them); set model.ctc_units=tokens for shards without them"
            )
        return None if missing else [phonemes.phoneme_ids(meta["phonemes"]) for meta in metas]

    def ctc_loss(self, enc: EncoderOutput, targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """CTC loss of the CTC head on the last encoder block (mean over samples of loss / target length).

        Args:
            enc: the encoder output (B, T', D).
            targets: B label sequences (`ctc_targets`).
        """
        return ctc_loss(self.ctc_head(enc.hidden), enc.lens, targets, self.ctc_blank)

    def prefix(
        self,
        batch: Mapping,
        use_context: bool = False,
        contexts: Sequence[Mapping | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded decoding prefix: (B, P, H) embeddings, (B, P) attention mask, and the (B,)
        caps on new tokens from each utterance's duration (`max_new_tokens`).

        Generation continues from position P - 1 of every row; position ids are
        `attention_mask.cumsum(-1) - 1` (clamped at 0), as in `build_inputs`. Contexts as in `forward`.
        """
        audio_embeds, audio_lens, _ = self.encode_audio(batch["feats"], batch["feat_lens"])
        contexts = self.prompt_contexts(batch, use_context, contexts)
        embeds, mask = self.decoding_prefix(audio_embeds, audio_lens, contexts)
        return embeds, mask, self.max_new_tokens(audio_lens)

    def decoding_prefix(
        self, audio_embeds: torch.Tensor, audio_lens: torch.Tensor, contexts: Sequence[Mapping | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded decoding prefixes of encoded audio ((B, A, H), (B,)) under B contexts: (B, P, H)
        embeddings and (B, P) attention mask. Joint beam search calls it twice on one encoding."""
        inputs = self.build_inputs(audio_embeds, audio_lens, None, contexts)
        return inputs.inputs_embeds, inputs.attention_mask

    def score(
        self,
        batch: Mapping,
        hyps_ids: Sequence[Sequence[Sequence[int]]],
        use_context: bool = False,
        add_eos: bool = True,
        contexts: Sequence[Mapping | None] | None = None,
    ) -> torch.Tensor:
        """log P(y | x, c) of given transcripts, with gradient (MWER training, joint beam search).

        Args:
            batch: as for forward (`texts` unused).
            hyps_ids: B lists of N hypotheses each, as token ids without eos.
            use_context: condition on each sample's context (log P(y | x, c)) or not (log P(y | x)).
            add_eos: include log P(eos | y) (the probability of the complete transcript).
            contexts: B explicit prompt contexts; override use_context.

        Returns:
            (B, N) sums of token log-probabilities.
        """
        n_best = len(hyps_ids[0]) if hyps_ids else 0
        if len(hyps_ids) != len(batch["feat_lens"]) or any(len(h) != n_best for h in hyps_ids):
            raise ValueError(
                f"hyps_ids must be {len(batch['feat_lens'])} lists of the same number of hypotheses"
            )
        audio_embeds, audio_lens, _ = self.encode_audio(batch["feats"], batch["feat_lens"])
        prompts = self._prompts(None, self.prompt_contexts(batch, use_context, contexts), len(hyps_ids))
        expanded = [
            replace(p, target=self.prompt.target_ids(h) if add_eos else list(h))
            for p, hyps in zip(prompts, hyps_ids, strict=True)
            for h in hyps
        ]
        inputs = self._assemble(
            audio_embeds.repeat_interleave(n_best, 0),
            audio_lens.repeat_interleave(n_best, 0),
            expanded,
            left_pad=False,
        )
        token_logp, _ = self._target_log_probs(inputs)
        return token_logp.sum(-1).view(len(hyps_ids), n_best)
