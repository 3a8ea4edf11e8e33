"""Loading a trained speech LLM for decoding (eval, transcribe, quantization)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from decoupleq.checkpoint import load_quantized
from seed_asr.artifacts.builders import build_speech_llm
from seed_asr.artifacts.quantized import WEIGHTS, is_quantized_dir, read_meta
from seed_asr.artifacts.serialization import cmvn_from_dict, tokenizer_from_files
from seed_asr.data.features import Fbank, FeatureExtractor
from seed_asr.utils.checkpoints import (
    CMVN_KEY,
    TOKENIZER_KEY,
    load_state_from_checkpoint,
    resolve_checkpoint,
    stored_config,
)


@dataclass
class LoadedModel:
    """A speech LLM in eval mode, the feature extractor it was trained with, its training config, and the
    file or folder its weights came from (a run folder's checkpoint, resolved)."""

    model: nn.Module
    features: FeatureExtractor
    cfg: DictConfig
    source: Path


def load_speech_llm(
    ckpt: str | Path, device: str | torch.device = "cpu", backend: str = "auto", checkpoint: str = "last"
) -> LoadedModel:
    """Rebuild a speech LLM from a self-contained stage checkpoint or a quantized folder.

    Args:
        ckpt: Lightning checkpoint file, DeepSpeed checkpoint folder, ``seed-asr export`` folder, a
            run folder, or a quantized folder written by
            ``seed_asr.artifacts.quantized.save_quantized_speech_llm`` (``QuantLinear`` layers).
        device: where to put the model and the feature extractor.
        backend: forward backend of quantized layers ("auto": Triton on GPUs, torch otherwise).
        checkpoint: which checkpoint of a run folder: ``"last"`` or ``"best"``.

    Raises:
        ValueError: the checkpoint lacks the tokenizer, the CMVN statistics or the config.
    """
    if is_quantized_dir(ckpt):
        meta = read_meta(ckpt)
        cfg = stored_config(meta["cfg"])
        model = build_speech_llm(cfg.model, tokenizer_from_files(meta[TOKENIZER_KEY]))
        load_quantized(model.to(device), Path(ckpt) / WEIGHTS, backend=backend)
        features = FeatureExtractor(Fbank(), cmvn_from_dict(meta[CMVN_KEY]))
        return LoadedModel(model.eval(), features.to(device), cfg, Path(ckpt))
    source = resolve_checkpoint(ckpt, checkpoint)
    state = load_state_from_checkpoint(source)
    missing = [k for k in (TOKENIZER_KEY, CMVN_KEY, "hyper_parameters") if k not in state]
    if missing:
        raise ValueError(f"checkpoint {ckpt} is not a speech-LLM stage checkpoint: it lacks {missing}")
    cfg = stored_config(state["hyper_parameters"]["cfg"])
    model = build_speech_llm(cfg.model, tokenizer_from_files(state[TOKENIZER_KEY]))
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    model.load_state_dict(weights)
    features = FeatureExtractor(Fbank(), cmvn_from_dict(state[CMVN_KEY]))
    return LoadedModel(model.to(device).eval(), features.to(device), cfg, source)


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
