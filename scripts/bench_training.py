"""Training throughput of the demo's SFT run with its data pipeline running, and where a step's time goes.

Runs the real ``Trainer.fit`` of ``seed-asr train stage=sft experiment=<experiment>`` (validation,
checkpoints and loggers off) for warm-up + timed optimizer steps, once per variant in one process, and
prints audio-seconds per wall second with each variant's ratio to the baseline; variants add their
Hydra overrides to the baseline's. Then it profiles the baseline over a few batches in a plain loop with
the same model, optimizer and precision: data wait, features, encoder + converter, LLM, optimizer step.
A missing ``--corpus`` folder is first built there (``--build-utterances``).

    python scripts/bench_training.py --corpus data/corpus --variant "trainer.precision=auto"
    python scripts/bench_training.py --steps 30 --variant "data.num_workers=1" --json bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shlex
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig, open_dict

from seed_asr.config import compose_config
from seed_asr.corpus.build import build_corpus
from seed_asr.data.cmvn import write_split_cmvn
from seed_asr.train import build
from seed_asr.utils.precision import BF16_CPU_FLAGS, read_cpuinfo

OFF_CALLBACKS = ("model_checkpoint", "last_checkpoint", "lr_monitor")  # write files or need a logger
PARTS = ("data wait", "features", "encoder + converter fwd+bwd", "LLM fwd+bwd", "optimizer step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="built corpus folder")
    parser.add_argument("--build-utterances", type=int, default=2000, help="size of a corpus built here")
    parser.add_argument("--experiment", default="demo", help="conf/experiment config of the SFT run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first (>= 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--baseline", default="", help="Hydra overrides of the baseline (default: none)")
    parser.add_argument("--variant", action="append", default=[], help="overrides added to the baseline's")
    parser.add_argument("--profile-steps", type=int, default=5, help="profiled batches after one warm-up")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.profile_steps < 1:
        parser.error("--warmup, --steps and --profile-steps must be >= 1")
    return args


def ensure_corpus(folder: Path, utterances: int) -> None:
    """Build a corpus with its CMVN statistics in ``folder`` unless one is there."""
    if not (folder / "stats.json").exists():
        build_corpus(folder, utterances, seed=0, overwrite=True)
    if not (folder / "cmvn.json").exists():
        write_split_cmvn(folder, min(1000, utterances // 2))


def bench_config(args: argparse.Namespace, overrides: list[str], out_dir: Path, steps: int) -> DictConfig:
    """The demo's SFT config with ``overrides``, for ``steps`` optimizer steps without validation,
    checkpoints or loggers."""
    cfg = compose_config(
        "train",
        ["stage=sft", f"experiment={args.experiment}", f"paths.corpus_dir={args.corpus}", *overrides],
        out_dir,
    )
    with open_dict(cfg):
        cfg.trainer.update(max_steps=steps, limit_val_batches=0, enable_checkpointing=False)
        cfg.callbacks = {k: v for k, v in (cfg.callbacks or {}).items() if k not in OFF_CALLBACKS}
        cfg.logger = None
    return cfg


def synchronize() -> None:
    """Wait for queued CUDA work, so that wall time covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Wall time and audio seconds (``feat_lens`` in 10 ms frames) of the steps after ``warmup``."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.audio_seconds = warmup, 0.0, 0.0, 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step > self.warmup:
            self.audio_seconds += float(batch["feat_lens"].sum()) / 100
        if step in (self.warmup, trainer.max_steps):
            synchronize()
            if step == self.warmup:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()


def measure(args: argparse.Namespace, overrides: list[str], out_dir: Path, steps: int) -> dict[str, Any]:
    """Audio-s/s and s/step of ``steps`` timed steps of a real ``Trainer.fit`` after ``args.warmup``."""
    cfg = bench_config(args, overrides, out_dir, args.warmup + steps)
    L.seed_everything(cfg.seed, workers=True)
    objects = build(cfg)
    trainer: L.Trainer = objects["trainer"]
    timer = StepTimer(args.warmup)
    trainer.callbacks.append(timer)
    trainer.fit(objects["module"], datamodule=objects["datamodule"])
    elapsed = timer.end - timer.start
    result = {
        "overrides": overrides,
        "precision": str(trainer.precision),
        "data_workers": cfg.data.num_workers,
    }
    result |= {"audio_s_per_s": timer.audio_seconds / elapsed, "s_per_step": elapsed / steps}
    del objects, trainer
    gc.collect()  # ends this fit's persistent DataLoader workers before the next one starts
    return result


class PartTimer:
    """Seconds per named part, summed over the recorded steps (CUDA synchronised at each boundary)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.recording = False

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        synchronize()
        start = time.perf_counter()
        yield
        synchronize()
        if self.recording:
            self.seconds[part] += time.perf_counter() - start


def profile(args: argparse.Namespace, overrides: list[str], out_dir: Path) -> dict[str, float]:
    """Seconds per step of each part over ``args.profile_steps`` batches (after one warm-up batch), in a
    plain loop with the trainer's model, optimizer, scheduler, clipping and autocast (no fp16 loss scaling).

    The backward is split at the audio embeddings: the LLM loss backpropagates to a detached copy, whose
    gradient (with the CTC term) then backpropagates through the converter and encoder."""
    cfg = bench_config(args, overrides, out_dir, args.profile_steps + 1)
    L.seed_everything(cfg.seed, workers=True)
    objects = build(cfg)
    module, datamodule, trainer = objects["module"], objects["datamodule"], objects["trainer"]
    module.configure_model()
    device = trainer.strategy.root_device
    model = module.model.to(device).train()
    optimizers = module.configure_optimizers()
    optimizer, scheduler = (
        (optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"])
        if isinstance(optimizers, dict)
        else (optimizers, None)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = trainer.precision_plugin.forward_context  # what the trainer wraps training_step in
    datamodule.setup("fit")
    batches = iter(datamodule.train_dataloader())
    timer = PartTimer()
    for step in range(args.profile_steps + 1):
        timer.recording = step > 0
        with timer("data wait"):
            batch = next(batches)
        with timer("features"):
            batch = datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0)
        with timer("encoder + converter fwd+bwd"), autocast():
            audio, audio_lens, enc = model.encode_audio(batch["feats"], batch["feat_lens"])
        audio_leaf = audio.detach().requires_grad_()
        with timer("LLM fwd+bwd"):  # + the CTC head's forward; its backward runs with the encoder's
            with autocast():
                contexts = model.prompt_contexts(batch, False, module.training_contexts(batch["metas"], step))
                token_logp, selected = model._target_log_probs(
                    model.build_inputs(audio_leaf, audio_lens, batch["texts"], contexts)
                )
                targets = model.ctc_targets(batch) if model.ctc_trains_something else None
                ctc = [model.ctc_weight * model.ctc_loss(enc, targets)] if targets is not None else []
            (-token_logp.sum() / selected.sum()).backward()
        with timer("encoder + converter fwd+bwd"):
            torch.autograd.backward([audio, *ctc], [audio_leaf.grad, *([None] * len(ctc))])
        with timer("optimizer step"):
            if cfg.trainer.get("gradient_clip_val"):
                torch.nn.utils.clip_grad_norm_(params, cfg.trainer.gradient_clip_val)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
    del objects, batches
    gc.collect()
    return {part: timer.seconds[part] / args.profile_steps for part in PARTS}


def machine(workers: int) -> dict[str, Any]:
    """CPU model, torch's CPU capability, bf16 flags, threads, data workers and GPU."""
    info = read_cpuinfo()
    return {
        "cpu": info.get("model name", "unknown"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_flags": [f for f in BF16_CPU_FLAGS if f in info.get("flags", "").split()],
        "torch_threads": torch.get_num_threads(),
        "data_workers": workers,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    ensure_corpus(args.corpus, args.build_utterances)
    baseline = shlex.split(args.baseline)
    variants = {"baseline": baseline} | {v: baseline + shlex.split(v) for v in args.variant}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        measure(args, baseline, out / "warmup", 1)  # first-fit costs (imports, allocator, threads) go here
        runs = {
            name: measure(args, overrides, out / f"run{i}", args.steps)
            for i, (name, overrides) in enumerate(variants.items())
        }
        parts = profile(args, baseline, out / "profile")
    base = runs["baseline"]["audio_s_per_s"]
    for run in runs.values():
        run["ratio"] = run["audio_s_per_s"] / base
    total = sum(parts.values())
    results = {
        "machine": machine(runs["baseline"]["data_workers"]),
        "experiment": args.experiment,
        "corpus": str(args.corpus),
        "warmup": args.warmup,
        "steps": args.steps,
        "runs": runs,
        "profile_s_per_step": parts,
    }
    print("\n" + "  ".join(f"{k}: {v}" for k, v in results["machine"].items()))
    print(
        f"stage=sft experiment={args.experiment} corpus={args.corpus}: {args.warmup} warm-up + "
        f"{args.steps} timed steps of Trainer.fit per variant"
    )
    print(f"{'variant':48s} {'precision':>10s} {'audio-s/s':>10s} {'s/step':>8s} {'ratio':>6s}")
    for name, run in runs.items():
        print(
            f"{name:48.48s} {run['precision']:>10s} {run['audio_s_per_s']:10.2f} {run['s_per_step']:8.3f} "
            f"{run['ratio']:6.2f}"
        )
    print(
        f"\nprofile of the baseline ({args.profile_steps} batches, plain loop; fit: "
        f"{runs['baseline']['s_per_step']:.3f} s/step)"
    )
    for part, seconds in [*parts.items(), ("total", total)]:
        print(f"{part:48s} {seconds:8.3f} s/step {seconds / total:7.1%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
