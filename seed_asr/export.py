"""``seed-asr export <checkpoint> <out_dir> [--checkpoint best] [--dtype bfloat16] [--llm] [--merge-lora]
[--overwrite]``

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
``seed_asr.artifacts.loading.load_speech_llm(<out_dir>)`` and ``stage.init_from=<out_dir>`` read it; ``llm/``
loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` (an LLM whose tokenizer would not read back to the
same token ids there is refused). A folder that is not empty is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

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
    stored_config,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LLM_DIR = "llm"
WRITTEN = (EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_TOKENIZER, EXPORT_CMVN, LLM_DIR)  # what an export writes
# texts whose token ids the exported LLM folder must reproduce: spaces, punctuation, digits, accents, Mandarin
PROBES = (
    "call anna okonkwo, please!",
    "Set a timer: 10 min (ok?)",
    "Zoë's café",
    "打电话给安娜。今天天气很好",
)


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


def check_tokenizer_round_trip(llm: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ValueError unless ``AutoTokenizer`` reads ``tokenizer``, saved beside ``llm``'s config, back to
    the same token ids: transformers picks the tokenizer class from the model type, and some classes (Qwen2's)
    rebuild their own pipeline around the saved vocabulary instead of reading ``tokenizer.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        llm.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        loaded = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    for text in (*PROBES, "".join(tokenizer.all_special_tokens)):
        for special in (False, True):
            ids = tokenizer.encode(text, add_special_tokens=special)
            if loaded.encode(text, add_special_tokens=special) != ids:
                raise ValueError(
                    f"the LLM's tokenizer would not survive its Hugging Face folder: AutoTokenizer loads it "
                    f"as {type(loaded).__name__}, which tokenizes {text!r} differently; export without --llm"
                )


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
    overwrite: bool = False,
) -> Path:
    """Write the export folder (see the module docstring) and return its path.

    ``checkpoint`` picks the checkpoint of a run folder ``ckpt``: ``"last"`` or ``"best"``. Everything is
    checked before anything is written; ``overwrite`` lets a folder that is not empty be written into (what
    an earlier export wrote there is replaced, other files are kept).

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
        ValueError: unknown ``dtype``, a checkpoint without config, ``llm`` for a stage without LLM or
            without tokenizer, or a tokenizer that ``AutoTokenizer`` would not read back from ``llm/``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out_dir)
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise FileExistsError(
            f"{out} is not empty (it holds {', '.join(held[:5])}); pass --overwrite to replace"
        )
    state = load_state_from_checkpoint(ckpt, checkpoint)
    if "hyper_parameters" not in state or "cfg" not in state["hyper_parameters"]:
        raise ValueError(f"checkpoint {ckpt} has no training config (hyper_parameters.cfg)")
    cfg = stored_config(state["hyper_parameters"]["cfg"])
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    tokenizer = tokenizer_from_files(state[TOKENIZER_KEY]) if TOKENIZER_KEY in state else None
    model: nn.Module | None = None
    if llm:
        if tokenizer is None:
            raise ValueError(f"checkpoint {ckpt} carries no tokenizer, so its LLM cannot be exported")
        model = _llm_of(weights, cfg, tokenizer)
        check_tokenizer_round_trip(model, tokenizer)
    for path in (out / name for name in WRITTEN):
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
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
    if TOKENIZER_KEY in state:
        (out / EXPORT_TOKENIZER).mkdir()
        for name, text in state[TOKENIZER_KEY].items():
            (out / EXPORT_TOKENIZER / Path(name).name).write_text(text, encoding="utf-8")
    if CMVN_KEY in state:
        (out / EXPORT_CMVN).write_text(json.dumps(state[CMVN_KEY]))
    if model is not None:
        save_llm(model.to(DTYPES[dtype]), tokenizer, out / LLM_DIR, merge_lora)
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
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    args = parser.parse_args(argv)
    try:
        with redirect_stdout(sys.stderr):  # libraries' prints and logs (DeepSpeed's) stay off stdout
            out = export_checkpoint(
                args.source,
                args.out_dir,
                args.dtype,
                args.llm,
                args.merge_lora,
                args.checkpoint,
                args.overwrite,
            )
    except (FileExistsError, ValueError) as err:
        sys.exit(f"seed-asr export: {err}")
    print(f"exported {args.source} -> {out}")


if __name__ == "__main__":
    main()
