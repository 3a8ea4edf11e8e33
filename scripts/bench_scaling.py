"""Training throughput by distribution strategy (CPU) and model FLOPs utilisation of a ~1B model (GPU).

CPU (default): the tiny SFT model on fixed in-memory batches, 2 processes, under DDP, ZeRO-2 and ZeRO-3;
per-process LLM tokens/s and audio seconds/s with ratios against DDP measured in the same invocation
(CPU figures only show each strategy's overhead, not GPU scaling).

    python scripts/bench_scaling.py [--steps 12 --warmup 4 --strategies ddp deepspeed_stage_2 ...]

GPU (--gpu): one process, bf16-mixed, conf/model/1b.yaml, SFT steps on fixed batches; tokens/s,
audio seconds/s and MFU = (analytic training FLOPs per step / step time) / peak dense bf16 FLOP/s of
the card (H100 SXM / H200: 989 TFLOP/s). Analytic FLOPs: 6 x parameters x tokens for the encoder,
converter and LLM body (the LM head only where labels are), plus 12 x layers x width x sum(T_i^2) for
attention. --dry-run runs the GPU path on the CPU with the tiny model (checks the script; no figures).

    python scripts/bench_scaling.py --gpu [--batch 32 --seconds 20 --steps 20 --warmup 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from seed_asr.config import compose_config
from seed_asr.testing.launch import run_local_group
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.train import build

# Lightning's table lacks a plain "NVIDIA H200" (its H200 entries need "sxm1"/"nvl1" in the name)
PEAK_BF16_BY_NAME = {"h200": 989.4e12, "h100": 989.4e12}


def attention_flops(layers: int, width: int, seq_lens: list[int]) -> float:
    """Training FLOPs of attention scores and weighted values: forward 4 T^2 d per layer, x3 with backward."""
    return 12.0 * layers * width * sum(t * t for t in seq_lens)


def matmul_flops(params: int, tokens: int) -> float:
    """Training FLOPs of dense layers: 2 per parameter and token forward, 4 backward."""
    return 6.0 * params * tokens


class StepTimer(L.Callback):
    """Wall time of each training step and the tokens it processed (this rank's batch).

    Args:
        warmup: steps left out of the figures (start-up, allocator warm-up, first-use compilation).
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.records: list[dict[str, float]] = []
        self._start = 0.0

    @staticmethod
    def _sync(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self._start
        if trainer.global_step > self.warmup:
            self.records.append({"seconds": seconds, **batch_work(pl_module, batch)})


def batch_work(pl_module: L.LightningModule, batch: dict) -> dict[str, float]:
    """Tokens and training FLOPs of one SFT batch of this rank (see the module docstring)."""
    model = pl_module.model
    enc_lens = model.encoder.output_lengths(batch["feat_lens"])
    audio_tokens = model.converter.output_lengths(enc_lens).tolist()
    prompts = [model.prompt.build(None, text) for text in batch["texts"]]
    llm_lens = [
        len(p.before_audio) + a + len(p.after_audio) + len(p.target)
        for p, a in zip(prompts, audio_tokens, strict=True)
    ]
    labels = sum(len(p.target) for p in prompts)
    llm = model.base_llm
    llm_cfg = llm.config
    embed = llm.get_input_embeddings().weight.numel()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    enc = model.encoder
    flops = (
        matmul_flops(count(enc), int(enc_lens.sum()))
        + attention_flops(len(enc.blocks), enc.d_model, enc_lens.tolist())
        + matmul_flops(count(model.converter), sum(audio_tokens))
        + matmul_flops(count(llm) - embed, sum(llm_lens))
        + attention_flops(llm_cfg.num_hidden_layers, llm_cfg.hidden_size, llm_lens)
        + matmul_flops(embed, labels)  # the (tied) LM head, computed only at label positions
    )
    return {
        "llm_tokens": float(sum(llm_lens)),
        "audio_seconds": float(batch["audio_lens"].sum()) / 16000.0,
        "flops": flops,
    }


def summarise(records: list[dict[str, float]]) -> dict[str, float]:
    """Per-process throughput over the timed steps."""
    if not records:
        raise RuntimeError("no timed steps: raise --steps above --warmup")
    seconds = sum(r["seconds"] for r in records)
    return {
        "steps": len(records),
        "step_s": seconds / len(records),
        "tokens_per_s": sum(r["llm_tokens"] for r in records) / seconds,
        "audio_s_per_s": sum(r["audio_seconds"] for r in records) / seconds,
        "flops_per_s": sum(r["flops"] for r in records) / seconds,
    }


def overrides(args: argparse.Namespace, shards: str, gpu: bool, strategy: str, devices: int) -> list[str]:
    model = "tiny" if args.dry_run or not gpu else args.model
    return [
        "stage=sft",
        f"model={model}",
        "data=fixed",
        f"data.train_shards={shards}",
        f"data.global_batch_size={args.batch * devices}",
        f"data.num_batches={args.steps + args.warmup + 1}",
        f"data.seconds={args.seconds}",
        "data.text_chars=null",
        f"trainer={'gpu' if gpu and not args.dry_run else 'cpu'}",
        f"trainer.devices={devices}",
        f"trainer.precision={'bf16-mixed' if gpu else '32-true'}",
        f"strategy={strategy}",
        f"trainer.max_steps={args.steps + args.warmup + 1}",
        "trainer.limit_val_batches=0",
        "+trainer.enable_checkpointing=false",
        "~logger",
        "~callbacks",
        *args.override,
    ]


def measure(args: argparse.Namespace, shards: str, gpu: bool, strategy: str, devices: int, out: Path) -> dict:
    """Build and fit one configuration in this process; return rank 0's summary (also on other ranks)."""
    torch.set_num_threads(args.threads)
    cfg = compose_config("train", overrides(args, shards, gpu, strategy, devices), out)
    objects = build(cfg)
    trainer, module = objects["trainer"], objects["module"]
    timer = StepTimer(args.warmup)
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=objects["datamodule"])
    result = summarise(timer.records)
    if gpu and torch.cuda.is_available():
        result["device"] = torch.cuda.get_device_name()
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    result["params"] = sum(p.numel() for p in module.model.parameters())
    return result


def peak_flops(override_tflops: float | None) -> float | None:
    """Dense bf16 peak of the current GPU (None on CPU or an unknown card without --peak-tflops)."""
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    from lightning.fabric.utilities.throughput import get_available_flops

    found = get_available_flops(torch.device("cuda"), torch.bfloat16)
    name = torch.cuda.get_device_name().lower()
    return found or next((v for k, v in PEAK_BF16_BY_NAME.items() if k in name), None)


def run_cpu(args: argparse.Namespace, shards: str, tmp: Path) -> None:
    results = {}
    for strategy in args.strategies:
        folder = tmp / strategy
        command = [sys.executable, __file__, "--worker", strategy, "--shards", shards, "--out", str(folder)]
        command += [f"--{k}={v}" for k, v in [("steps", args.steps), ("warmup", args.warmup)]]
        command += [f"--batch={args.batch}", f"--seconds={args.seconds}", f"--threads={args.threads}"]
        codes = run_local_group(
            command, args.world_size, folder / "logs", {"OMP_NUM_THREADS": str(args.threads)}
        )
        if any(codes):
            sys.exit(f"{strategy}: exit codes {codes}; logs in {folder / 'logs'}")
        results[strategy] = json.loads((folder / "result.json").read_text())
    base = results[args.strategies[0]]
    print(
        f"\n{args.world_size} CPU processes, tiny SFT model, "
        f"{args.batch} x {args.seconds} s per process per step"
    )
    print(f"{'strategy':<20} {'step s':>8} {'tokens/s':>10} {'audio s/s':>10} {'ratio':>7}")
    for name, r in results.items():
        ratio = r["tokens_per_s"] / base["tokens_per_s"]
        print(
            f"{name:<20} {r['step_s']:8.3f} {r['tokens_per_s']:10.1f} {r['audio_s_per_s']:10.2f} {ratio:7.2f}"
        )


def run_gpu(args: argparse.Namespace, shards: str, tmp: Path) -> None:
    r = measure(args, shards, True, "auto", 1, tmp / "gpu")
    peak = peak_flops(args.peak_tflops)
    mfu = r["flops_per_s"] / peak if peak else None
    print(
        f"\n{r.get('device', 'cpu (dry run)')}: model={args.model if not args.dry_run else 'tiny'}, "
        f"{r['params'] / 1e6:.0f} M parameters, batch {args.batch} x {args.seconds} s, bf16-mixed"
    )
    print(
        f"step {r['step_s']:.3f} s | {r['tokens_per_s']:.0f} LLM tokens/s | "
        f"{r['audio_s_per_s']:.1f} audio s/s | "
        f"{r['flops_per_s'] / 1e12:.1f} TFLOP/s | MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}"
        + (f" | peak memory {r['peak_mem_gb']:.1f} GiB" if "peak_mem_gb" in r else "")
    )
    print(json.dumps({**r, "mfu": mfu}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="one-GPU throughput and MFU of --model")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu: the same path on CPU, tiny model")
    parser.add_argument("--model", default="1b", help="conf/model option for --gpu")
    parser.add_argument("--strategies", nargs="+", default=["ddp", "deepspeed_stage_2", "deepspeed_stage_3"])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="utterances per process per step")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per utterance")
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the card")
    parser.add_argument("--override", nargs="*", default=[], help="extra train config overrides")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    big = args.gpu and not args.dry_run
    defaults = {
        "batch": 32 if big else 4,
        "seconds": 20.0 if big else 2.0,
        "steps": 20 if big else 8,
        "warmup": 5 if big else 2,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.worker:  # one rank of a CPU measurement
        result = measure(args, args.shards, False, args.worker, args.world_size, Path(args.out))
        if torch.distributed.get_rank() == 0:
            (Path(args.out) / "result.json").write_text(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        shards = str(write_synthetic_shards(Path(tmp) / "corpus", 1, 64, 1.0, 2.0)[0])
        (run_gpu if args.gpu else run_cpu)(args, shards, Path(tmp))


if __name__ == "__main__":
    main()
