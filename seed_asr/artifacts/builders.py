"""Building the speech LLM from a model config, shared by training stages and inference."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import PreTrainedTokenizerBase


def build_speech_llm(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    """Instantiate ``model_cfg`` (a ``SpeechLLM`` config) with ``tokenizer``; the config's own
    ``tokenizer`` entry only says where tokenizers come from and is not passed on."""
    cfg = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k != "tokenizer"])
    return instantiate(cfg, tokenizer=tokenizer)
