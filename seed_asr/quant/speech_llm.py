"""The SpeechLLM-specific side of decoupleQ: the block plan, calibration batches and token masks.

decoupleq's driver is model-agnostic: it needs a chain of blocks whose output feeds the next block's
first input. A speech LLM is three such chains joined by code outside any block (frame splicing,
prompt assembly), so it is quantized as consecutive segments — the encoder's Conformer blocks, the
converter, the LLM decoder layers — each calibrated on the outputs of the earlier segments already
quantized (sequential calibration across the joins). A segment's inputs are captured by running the
model from the quantized outputs of the segment before it (kept from its calibration, so no segment
runs twice), or from the batch when that one was not quantized. Padding is masked out of H and of the
block-wise loss with per-segment token masks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decoupleq import QuantReport, quantize_model
from seed_asr.artifacts.quantized import save_quantized_speech_llm, size_report, write_report
from seed_asr.data.features import FeatureExtractor
from seed_asr.decoding.evaluation import with_features
from seed_asr.models.encoder import padding_mask
from seed_asr.quant.spec import QuantSpec


@dataclass
class Segment:
    """One chain of blocks of the plan: its part name and its blocks in model order."""

    part: str
    blocks: list[nn.Module]


def block_plan(model: nn.Module, parts: Iterable[str]) -> list[Segment]:
    """The segments of a ``SpeechLLM`` to quantize, in model order (encoder, converter, llm).

    Args:
        model: a ``SpeechLLM``.
        parts: which of "encoder", "converter", "llm".
    """
    wanted = set(parts)
    plan = []
    if "encoder" in wanted:
        blocks = getattr(model.encoder, "blocks", None)
        if blocks is None:
            raise ValueError(f"quant.parts has 'encoder' but {type(model.encoder).__name__} has no .blocks")
        plan.append(Segment("encoder", list(blocks)))
    if "converter" in wanted:
        plan.append(Segment("converter", [model.converter]))
    if "llm" in wanted:
        plan.append(Segment("llm", list(model.base_llm.get_decoder().layers)))
    return plan


def check_spec(model: nn.Module, spec: QuantSpec) -> int:
    """Raise ValueError when ``spec`` cannot quantize ``model`` (a group size that does not divide a
    selected layer's width, or patterns selecting nothing); returns the number of selected linears."""
    count = 0
    for segment in block_plan(model, spec.parts):
        for block in segment.blocks:
            for name, linear in selected_linears(model, block, spec).items():
                spec.config.check_layer(name, linear.in_features)
                count += 1
    if count == 0:
        raise ValueError(f"quant {spec.name!r}: parts {list(spec.parts)} with include {list(spec.include)} "
                         f"and exclude {list(spec.exclude)} select no linear layer")
    return count


def selected_linears(model: nn.Module, block: nn.Module, spec: QuantSpec) -> dict[str, nn.Linear]:
    """The linears of ``block`` (by full name in ``model``) that the include/exclude regexes select."""
    prefix = next(n for n, m in model.named_modules() if m is block)
    out = {}
    for rel, module in block.named_modules():
        name = f"{prefix}.{rel}" if rel else prefix
        if not isinstance(module, nn.Linear):
            continue
        if spec.include and not any(re.search(p, name) for p in spec.include):
            continue
        if not any(re.search(p, name) for p in spec.exclude):
            out[name] = module
    return out


def calibration_batches(loader: Iterable[Mapping[str, Any]], features: FeatureExtractor, count: int,
                        device: torch.device) -> list[dict[str, Any]]:
    """The first ``count`` batches of a loader with ``feats`` / ``feat_lens`` computed as the data
    module does on transfer, without SpecAugment."""
    return [with_features(batch, features, device) for batch in islice(loader, count)]


def segment_masks(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Real-token masks of each segment's inputs for one batch (lengths only, no forward pass).

    Returns:
        {"encoder": (B, T') frames after subsampling, "converter": (B, A) audio tokens,
        "llm": (B, L) positions of the teacher-forced prompt + transcript}.
    """
    enc_lens = model.encoder.output_lengths(batch["feat_lens"])
    audio_lens = model.converter.output_lengths(enc_lens)
    hidden = model.base_llm.config.hidden_size
    dummy = torch.zeros(len(audio_lens), int(audio_lens.max()), hidden, device=audio_lens.device)
    llm_inputs = model.build_inputs(dummy, audio_lens, batch["texts"], [None] * len(audio_lens))
    return {"encoder": padding_mask(enc_lens, int(enc_lens.max())),
            "converter": padding_mask(audio_lens, int(audio_lens.max())),
            "llm": llm_inputs.attention_mask.bool()}


def _run_speech_llm(model: nn.Module, batch: Mapping[str, Any]) -> Any:
    return model(batch)


def _run_converter(model: nn.Module, batch: Mapping[str, Any]) -> Any:
    """The converter on the quantized encoder's outputs kept in ``batch["encoder"]``."""
    return model.converter(batch["encoder"], model.encoder.output_lengths(batch["feat_lens"]))


def _run_llm(model: nn.Module, batch: Mapping[str, Any]) -> Any:
    """The LLM on the quantized converter's audio tokens kept in ``batch["converter"]`` (as the model's
    forward runs it: no context)."""
    audio_lens = model.converter.output_lengths(model.encoder.output_lengths(batch["feat_lens"]))
    return model.transcript_nll(batch["converter"], audio_lens, batch["texts"], [None] * len(audio_lens))


# How each part's inputs are captured when the part before it was quantized: from that part's outputs.
_RESUME = {"converter": ("encoder", _run_converter), "llm": ("converter", _run_llm)}


def _feeding_block(model: nn.Module, segment: Segment) -> int:
    """Index of the block of ``segment`` whose output the next part reads (the encoder's:
    ``encoder_layer``)."""
    n = len(segment.blocks)
    if segment.part != "encoder":
        return n - 1
    if not -n <= model.encoder_layer < n:
        raise ValueError(f"encoder_layer={model.encoder_layer} but the encoder has {n} blocks")
    return model.encoder_layer % n


def _keep_outputs(outputs: dict[str, list[torch.Tensor]], part: str, block: int
                  ) -> Callable[[int, list[torch.Tensor]], None]:
    """A ``quantize_model`` ``on_block_outputs`` keeping ``outputs[part]`` from block ``block``."""
    def keep(b: int, hidden: list[torch.Tensor]) -> None:
        if b == block:
            outputs[part] = hidden
    return keep


def quantize_speech_llm(model: nn.Module, batches: list[dict[str, Any]], spec: QuantSpec,
                        device: torch.device | str | None = None, backend: str = "auto") -> QuantReport:
    """Quantize a ``SpeechLLM`` in place, segment by segment (see the module docstring).

    Args:
        model: a float ``SpeechLLM``; its selected linears become ``QuantLinear``.
        batches: calibration batches with ``feats``, ``feat_lens`` and ``texts`` (none: data-free, for a
            method that needs no calibration).
        spec: what and how to quantize.
        device: where each block runs while it is quantized (default: where it is).
        backend: forward backend of the new ``QuantLinear`` layers.

    Returns:
        One report over all segments (block indices counted across segments).
    """
    check_spec(model, spec)
    masks = [segment_masks(model, batch) for batch in batches]
    total = QuantReport(spec.config)
    outputs: dict[str, list[torch.Tensor]] = {}  # part -> its quantized outputs that the next part reads
    plan = block_plan(model, spec.parts)
    offset = 0
    for s, segment in enumerate(plan):
        items = [{**batch, "token_mask": m[segment.part]} for batch, m in zip(batches, masks, strict=True)]
        if any(selected_linears(model, block, spec) for block in segment.blocks):
            source, forward_fn = _RESUME.get(segment.part, (None, _run_speech_llm))
            if source in outputs:
                items = [{**item, source: out} for item, out in zip(items, outputs.pop(source), strict=True)]
            else:
                forward_fn = _run_speech_llm
            read_next = s + 1 < len(plan) and _RESUME.get(plan[s + 1].part, (None,))[0] == segment.part
            keep = _keep_outputs(outputs, segment.part, _feeding_block(model, segment)) if read_next else None
            report = quantize_model(model, segment.blocks, items or None, spec.config,
                                    include=spec.include or None,
                                    exclude=spec.exclude or None, order=spec.order or None, device=device,
                                    forward_fn=forward_fn, backend=backend, on_block_outputs=keep)
            total.layers.update(report.layers)
            total.refinement.update({offset + b: r for b, r in report.refinement.items()})
            total.seconds += report.seconds
        offset += len(segment.blocks)
    return total


def quantize_to_folder(model: nn.Module, batches: list[dict[str, Any]], spec: QuantSpec, out_dir: str | Path,
                       cfg: dict[str, Any], cmvn: dict[str, list[float]], device: torch.device | str | None,
                       backend: str = "auto", **info: Any) -> dict[str, Any]:
    """Quantize a float ``SpeechLLM`` in place and write its self-contained quantized folder.

    Args:
        model: the float model (``model.tokenizer`` travels along).
        batches: calibration batches (see ``calibration_batches``).
        spec: what and how to quantize.
        out_dir: the folder written (see ``seed_asr.artifacts.quantized``).
        cfg: the training config as plain containers.
        cmvn: the feature normalisation as ``cmvn_to_dict``.
        device, backend: as for ``quantize_speech_llm``.
        **info: extra fields recorded in ``quant_report.json`` (e.g. the source checkpoint).

    Returns:
        The report written to ``quant_report.json``: per-layer errors, block-wise losses, seconds, sizes.
    """
    float_numel = {k: v.numel() for k, v in model.state_dict().items()}
    report = quantize_speech_llm(model, batches, spec, device=device, backend=backend)
    save_quantized_speech_llm(model, out_dir, cfg, model.tokenizer, cmvn, spec.to_dict())
    summary = {**report.to_dict(), "size": size_report(float_numel, out_dir), **info}
    write_report(out_dir, summary)
    return summary
