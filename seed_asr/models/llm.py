"""The causal LLM of the AcLLM: a built-in small Qwen2 or any local Hugging Face causal LM, + LoRA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.initialization import no_init_weights


def build_qwen2(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 512,
    num_layers: int = 8,
    num_heads: int = 8,
    num_kv_heads: int = 4,
    intermediate_size: int = 1408,
    max_position_embeddings: int = 4096,
    rope_theta: float = 10000.0,
    tie_word_embeddings: bool = True,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2-architecture LM sized for `tokenizer`'s vocabulary.

    Args:
        tokenizer: gives vocab size and pad/bos/eos ids.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size: model size.
        max_position_embeddings: longest prompt + transcript in tokens.
        rope_theta: rotary base.
        tie_word_embeddings: share input embeddings and output head.
    """
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if not _zero3_init_active():
        return Qwen2ForCausalLM(config)
    # Inside deepspeed.zero.Init (ZeRO-3, StageModule.configure_model) each parameter is partitioned as
    # soon as its module is built, and transformers' weight init cannot index into the empty local
    # tensors: build without it, then run the same init module by module on gathered parameters.
    with no_init_weights():
        model = Qwen2ForCausalLM(config)
    _init_partitioned(model, model)
    model.tie_weights()  # skipped with the init above: without it the LM head would train apart
    return model


def _zero3_init_active() -> bool:
    """Whether parameters created now are partitioned by an active ``deepspeed.zero.Init``."""
    try:
        from deepspeed.runtime.zero import partition_parameters
    except ImportError:
        return False
    return partition_parameters.zero_init_context > 0


@torch.no_grad()
def _init_partitioned(model: PreTrainedModel, module: torch.nn.Module) -> None:
    """``model``'s weight init of ``module`` and its children, children first (transformers' order, so
    the random draws match a model built without ZeRO), each module's own parameters gathered with
    rank 0's values broadcast."""
    import deepspeed

    for child in module.children():
        _init_partitioned(model, child)
    with deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=0):
        model._init_weights(module)


def load_causal_lm(tokenizer: PreTrainedTokenizerBase, path: str, dtype: str = "float32") -> PreTrainedModel:
    """A pretrained causal LM from a local folder (no download is attempted), in training mode as any
    freshly built module (the speech LLM is put in eval mode for decoding).

    Args:
        tokenizer: the tokenizer used with it (normally loaded from the same folder).
        path: folder written by `save_pretrained`.
        dtype: weight dtype name ("float32", "bfloat16", ...).
    """
    if not Path(path).is_dir():
        raise FileNotFoundError(f"LLM path {path!r} is not a local model folder")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype))
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the LLM at {path!r} embeds only {n_embed}"
        )
    return model.train()  # from_pretrained returns eval mode; a built module trains (dropout, LoRA dropout)


def apply_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
) -> PeftModel:
    """Wrap model with LoRA adapters (peft); only the adapters are trainable afterwards.

    Args:
        model: the causal LM.
        r: adapter rank.
        alpha: LoRA scaling numerator (scale = alpha / r).
        dropout: dropout on the adapter input.
        target_modules: names of the Linear modules to adapt.
    """
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
