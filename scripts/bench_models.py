"""Benchmark SpeechLLM training steps from a conf/model config: activation checkpointing vs none.

Prints audio-seconds per second and (on a GPU) peak memory of each variant and their ratio to the baseline
(no checkpointing), all measured in this process on the same device.

    python scripts/bench_models.py --model base --batch 8 --seconds 15 --steps 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from seed_asr.text.tokenizer import train_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"
WORDS = [
    "call",
    "set",
    "play",
    "turn",
    "what",
    "the",
    "a",
    "timer",
    "music",
    "weather",
    "lights",
    "kitchen",
    "berlin",
    "anneliese",
    "minutes",
]


def make_batch(batch: int, seconds: float, words: int, device: torch.device, gen: torch.Generator) -> dict:
    frames = int(seconds * 100)
    lens = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
    lens[0] = frames
    texts = [
        " ".join(WORDS[i] for i in torch.randint(len(WORDS), (words,), generator=gen)) for _ in range(batch)
    ]
    return {
        "feats": torch.randn(batch, frames, 80, generator=gen).to(device),
        "feat_lens": lens.to(device),
        "texts": texts,
        "metas": [{} for _ in texts],
        "audio_seconds": float(lens.sum()) / 100,
    }


def run(
    cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    checkpointing: bool,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, float]:
    """Audio-seconds per second and peak GiB of `args.steps` timed training steps."""
    cfg.encoder.activation_checkpointing = checkpointing
    cfg.llm_gradient_checkpointing = checkpointing
    torch.manual_seed(0)
    model = instantiate(cfg, tokenizer=tokenizer).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(args.batch, args.seconds, args.words, device, gen) for _ in range(args.steps + 1)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i, batch in enumerate(batches):
        if i == 1:  # the first step warms up kernels and allocator
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return sum(b["audio_seconds"] for b in batches[1:]) / elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="conf/model config name")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="longest utterance of a batch")
    parser.add_argument("--words", type=int, default=40, help="words per transcript")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = train_tokenizer([" ".join(WORDS)] * 10, vocab_size=400)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+model={args.model}"]).model
    # A throwaway baseline run first: kernel selection and allocator warm-up otherwise favour
    # whichever variant runs second (seen on an H200: checkpointing looked 2x faster than none).
    run(cfg, tokenizer, False, args, device)
    results = {ckpt: run(cfg, tokenizer, ckpt, args, device) for ckpt in (False, True)}
    base_speed, base_peak = results[False]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"model={args.model} device={name} batch={args.batch} x <={args.seconds}s bf16={args.bf16}")
    for ckpt, (speed, peak) in results.items():
        memory = f"  peak {peak:6.2f} GiB (x{peak / base_peak:.2f})" if device.type == "cuda" else ""
        print(f"checkpointing={ckpt!s:5}  {speed:8.1f} audio-s/s (x{speed / base_speed:.2f}){memory}")


if __name__ == "__main__":
    main()
