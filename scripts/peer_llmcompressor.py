"""Run llmcompressor's GPTQ on a `save_pretrained` model folder and write the decoder layers'
fake-quantized linear weights to safetensors. Runs in an environment with llmcompressor installed
(`make peers-env`); called by `bench_quant.py --llmcompressor-python`.

Usage: python scripts/peer_llmcompressor.py --model DIR --calibration FILE --bits 2 --group 64 --out FILE
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="save_pretrained folder of the float model")
    parser.add_argument("--calibration", required=True, help="safetensors with input_ids and attention_mask")
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--group", type=int, required=True, help="group size, -1 for per channel")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    calib = load_file(args.calibration)
    # The windows are already token ids; oneshot still wants a processor: one token per id.
    vocab = {f"<{i}>": i for i in range(model.config.vocab_size)}
    processor = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<0>")),
                                        unk_token="<0>", pad_token="<0>")
    dataset = Dataset.from_dict({k: v.tolist() for k, v in calib.items()})
    weights = {"num_bits": args.bits, "type": "int", "symmetric": False}
    weights.update({"strategy": "channel"} if args.group == -1 else
                   {"strategy": "group", "group_size": args.group, "actorder": "static"})
    recipe = GPTQModifier(ignore=["lm_head"], block_size=128, dampening_frac=0.01,
                          config_groups={"group_0": {"targets": ["Linear"], "weights": weights}})
    oneshot(model=model, processor=processor, dataset=dataset, recipe=recipe,
            num_calibration_samples=len(dataset), max_seq_length=len(dataset[0]["input_ids"]))
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
             if k.startswith("model.layers.") and k.endswith(".weight") and v.dim() == 2}
    save_file(state, args.out)
    print(f"wrote {len(state)} quantized weights to {args.out}")


if __name__ == "__main__":
    main()
