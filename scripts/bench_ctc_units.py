"""How fast an experiment's Conformer encoder learns CTC with each label kind on a corpus: the LLM's tokens
(characters, for the demo's tokenizer) against the records' phonemes (`model.ctc_units`).

Trains only the encoder and the CTC head, from the same initialisation and on the same batches (read once,
before timing), for ``--steps`` steps per label kind; prints the CTC loss per label over the first and last
50 steps, the share of frames whose greedy label is not blank, and seconds per step.

    python scripts/bench_ctc_units.py --corpus runs/demo/corpus --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from seed_asr.artifacts.builders import build_speech_llm
from seed_asr.lit.tokenizers import resolve_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"
WINDOW = 50


def read_batches(cfg, steps: int) -> list[dict]:
    """The first ``steps`` training batches with features (as the training step sees them)."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batches = []
    while len(batches) < steps:
        for batch in datamodule.train_dataloader():
            batches.append(datamodule.on_after_batch_transfer(batch, 0))
            if len(batches) == steps:
                break
    return batches


def train_ctc(cfg, tokenizer, units: str, batches: list[dict], lr: float, warmup: int) -> dict:
    """CTC-only training of the encoder + head; returns losses, non-blank share and seconds per step."""
    with open_dict(cfg):
        cfg.model.ctc_units, cfg.model.ctc_weight = units, 1.0
    torch.manual_seed(0)
    model = build_speech_llm(cfg.model, tokenizer).train()
    params = [*model.encoder.parameters(), *model.ctc_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    losses, nonblank = [], []
    start = time.perf_counter()
    for batch in batches:
        enc = model.encoder(batch["feats"], batch["feat_lens"])
        loss = model.ctc_loss(enc, model.ctc_targets(batch))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        with torch.no_grad():
            valid = torch.arange(enc.hidden.shape[1])[None] < enc.lens[:, None]
            best = model.ctc_head(enc.hidden).argmax(-1)
            nonblank.append(((best != model.ctc_blank) & valid).sum().item() / valid.sum().item())
    return {
        "classes": model.ctc_head.out_features,
        "first": sum(losses[:WINDOW]) / len(losses[:WINDOW]),
        "last": sum(losses[-WINDOW:]) / len(losses[-WINDOW:]),
        "nonblank": sum(nonblank[-WINDOW:]) / len(nonblank[-WINDOW:]),
        "s_per_step": (time.perf_counter() - start) / len(batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path("runs/demo/corpus"), help="corpus folder")
    parser.add_argument("--experiment", default="demo", help="conf/experiment/<name>.yaml (model, data)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    if not (args.corpus / "train").is_dir():
        raise SystemExit(f"--corpus {args.corpus}: no train/ split (build it with `seed-asr corpus`)")
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=[
            f"experiment={args.experiment}", "stage=sft", f"paths.corpus_dir={args.corpus.resolve()}",
            f"paths.output_dir={out}", "data.num_workers=1",
        ])
        tokenizer = resolve_tokenizer(cfg.stage, cfg.model.tokenizer, cfg.data.train_shards)
        batches = read_batches(cfg, args.steps)
        seconds = sum(float(b["audio_lens"].sum()) for b in batches) / 16000
        print(f"{args.steps} steps of {seconds / args.steps:.1f} audio s, lr {args.lr}, warmup {args.warmup}")
        header = ("units", "classes", "loss first 50", "loss last 50", "non-blank", "s/step")
        print("{:<9} {:>7} {:>13} {:>12} {:>9} {:>6}".format(*header))
        for units in ("tokens", "phonemes"):
            r = train_ctc(cfg, tokenizer, units, batches, args.lr, args.warmup)
            print(f"{units:<9} {r['classes']:>7} {r['first']:>13.3f} {r['last']:>12.3f} "
                  f"{r['nonblank']:>9.3f} {r['s_per_step']:>6.2f}")


if __name__ == "__main__":
    main()
