"""``seed-asr export <checkpoint> <out_dir> [--checkpoint best] [--dtype bfloat16] [--llm] [--merge-lora]``

Turns any training checkpoint (a Lightning file, a DeepSpeed ZeRO folder of any stage and world size,
or a run folder: its ``last`` checkpoint unless ``--checkpoint best``) into a folder that needs neither
Lightning nor DeepSpeed:

```
<out_dir>/model.safetensors   consolidated weights of the stage's model (fp32 or bf16)
<out_dir>/config.yaml         the training config (model, stage, data, ...)
<out_dir>/tokenizer/          the tokenizer's save_pretrained files (stages with a tokenizer)
<out_dir>/cmvn.json           feature normalisation {"mean", "std"} (stages trained on audio)
<out_dir>/llm/                with --llm: the LLM as a Hugging Face save_pretrained folder (+ tokenizer);
                              LoRA merged with --merge-lora, else the base model plus llm/adapter/
```
``seed_asr.artifacts.loading.load_speech_llm(<out_dir>)`` and ``stage.init_from=<out_dir>`` read it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from seed_asr.artifacts.builders import build_speech_llm
from seed_asr.artifacts.serialization import tokenizer_from_files
from seed_asr.utils.checkpoints import (
    CHECKPOINT_HELP,
    CMVN_KEY,
    EXPORT_CMVN,
    EXPORT_CONFIG,
    EXPORT_TOKENIZER,
    EXPORT_WEIGHTS,
    RUN_CHECKPOINTS,
    TOKENIZER_KEY,
    load_state_from_checkpoint,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _llm_of(
    weights: dict[str, torch.Tensor], cfg: DictConfig, tokenizer: object
) -> PreTrainedModel | PeftModel:
    """The stage's LLM with its trained weights: inside a speech LLM, or the LM stage's ``{"llm"}``."""
    if not any(k.startswith("llm.") for k in weights):
        raise ValueError(f"stage {cfg.stage.name!r} has no LLM to export (no 'llm.' weights)")
    if any(k.startswith("encoder.") for k in weights) and "converter" in cfg.model:
        model = build_speech_llm(cfg.model, tokenizer)
        model.load_state_dict(weights)
        return model.llm
    llm = instantiate(cfg.model.llm)(tokenizer=tokenizer)
    llm.load_state_dict({k.removeprefix("llm."): v for k, v in weights.items()})
    return llm


def save_llm(llm: PreTrainedModel | PeftModel, tokenizer: object, out: Path, merge_lora: bool) -> None:
    """Hugging Face folder of the LLM: merged LoRA, or the base model with the adapter in ``adapter/``."""
    if isinstance(llm, PeftModel):
        if merge_lora:
            llm = llm.merge_and_unload()
        else:
            llm.save_pretrained(out / "adapter")
            llm = llm.get_base_model()
    llm.save_pretrained(out)
    tokenizer.save_pretrained(out)


def export_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    dtype: str = "float32",
    llm: bool = False,
    merge_lora: bool = False,
    checkpoint: str = "last",
) -> Path:
    """Write the export folder (see the module docstring) and return its path.

    ``checkpoint`` picks the checkpoint of a run folder ``ckpt``: ``"last"`` or ``"best"``.

    Raises:
        ValueError: unknown ``dtype``, a checkpoint without config, or ``llm`` for a stage without LLM.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    state = load_state_from_checkpoint(ckpt, checkpoint)
    if "hyper_parameters" not in state or "cfg" not in state["hyper_parameters"]:
        raise ValueError(f"checkpoint {ckpt} has no training config (hyper_parameters.cfg)")
    cfg = OmegaConf.create(state["hyper_parameters"]["cfg"])
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cast, seen = {}, set()
    for name, tensor in weights.items():
        tensor = (tensor.to(DTYPES[dtype]) if tensor.is_floating_point() else tensor).contiguous()
        # tied weights (embeddings and LM head) share storage, which safetensors refuses: copy the twin
        cast[name] = tensor.clone() if tensor.data_ptr() in seen else tensor
        seen.add(tensor.data_ptr())
    save_file(
        cast, out / EXPORT_WEIGHTS, metadata={"format": "seed-asr", "dtype": dtype, "stage": cfg.stage.name}
    )
    OmegaConf.save(cfg, out / EXPORT_CONFIG)
    tokenizer = None
    if TOKENIZER_KEY in state:
        (out / EXPORT_TOKENIZER).mkdir(exist_ok=True)
        for name, text in state[TOKENIZER_KEY].items():
            (out / EXPORT_TOKENIZER / Path(name).name).write_text(text, encoding="utf-8")
        tokenizer = tokenizer_from_files(state[TOKENIZER_KEY])
    if CMVN_KEY in state:
        (out / EXPORT_CMVN).write_text(json.dumps(state[CMVN_KEY]))
    if llm:
        if tokenizer is None:
            raise ValueError(f"checkpoint {ckpt} carries no tokenizer, so its LLM cannot be exported")
        model: nn.Module = _llm_of(weights, cfg, tokenizer)
        save_llm(model.to(DTYPES[dtype]), tokenizer, out / "llm", merge_lora)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``seed-asr export``)."""
    parser = argparse.ArgumentParser(prog="seed-asr export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source", metavar="checkpoint", help="Lightning .ckpt file, DeepSpeed checkpoint folder or run folder"
    )
    parser.add_argument("out_dir", help="folder to write")
    parser.add_argument("--checkpoint", default="last", choices=RUN_CHECKPOINTS, help=CHECKPOINT_HELP)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--llm", action="store_true", help="also write the LLM as a Hugging Face folder")
    parser.add_argument("--merge-lora", action="store_true", help="merge LoRA adapters into the LLM")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.source, args.out_dir, args.dtype, args.llm, args.merge_lora, args.checkpoint)
    print(f"exported {args.source} -> {out}")


if __name__ == "__main__":
    main()
