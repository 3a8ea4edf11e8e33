"""Hostile inputs for the reliability tests of the data path: shards of chosen samples, audio files in
any format, and the tiny model trained and evaluated on them."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import webdataset as wds

from seed_asr.config import compose_config
from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.eval import evaluate
from seed_asr.testing.synthetic import synthetic_record, synthetic_wave, write_synthetic_shards
from seed_asr.train import train

# a tiny sft run: 2 steps, one validation over the whole dev set after the sanity check
TRAIN = [
    "stage=sft", "model=tiny", "trainer=cpu", "data.cmvn_path=null", "data.max_batch_seconds=10",
    "data.max_duration=5", "data.num_workers=0", "data.batches_per_epoch=2", "trainer.max_steps=2",
    "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "+trainer.enable_model_summary=false",
    "callbacks.progress_bar=null", "stage.scheduler.num_warmup_steps=1",
]


def wave(seconds: float, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) float32 speech-like audio at ``sr``, peak well below full scale."""
    return synthetic_wave(np.random.default_rng(seed), seconds, sr)


def encoded(samples: np.ndarray, sr: int = SAMPLE_RATE, fmt: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    """(S,) or (S, C) samples as an audio file's bytes."""
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def write_shard(path: Path, samples: Mapping[str, Mapping[str, Any]]) -> str:
    """A tar shard of ``{key: {extension: bytes, or a record dict for "json"}}``; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as writer:
        for key, members in samples.items():
            sample = {ext: json.dumps(v).encode() if isinstance(v, dict) else v for ext, v in members.items()}
            writer.write({"__key__": key, **sample})
    return str(path)


def sample(key: str, seconds: float, seed: int = 0, **record: Any) -> dict[str, Any]:
    """A good sample (FLAC + a record that matches it), with record fields replaced by ``record``."""
    return {"flac": encoded(wave(seconds, seed)), "json": {**synthetic_record(key, seconds), **record}}


def clean_corpus(root: Path) -> Path:
    """Small clean train / dev / test splits of synthetic speech (``<split>/shard-000000.tar``)."""
    write_synthetic_shards(root / "train", 1, 8, 0.5, 1.0, seed=0)
    write_synthetic_shards(root / "dev", 1, 3, 0.5, 1.0, seed=1)
    write_synthetic_shards(root / "test", 1, 3, 0.5, 1.0, seed=2)
    return root


def train_tiny(corpus: Path, run: Path, *overrides: str) -> dict[str, Any]:
    """Train the tiny model in ``run`` (``TRAIN`` then ``overrides``); returns the final logged metrics."""
    cfg = compose_config("train", [*TRAIN, f"paths.corpus_dir={corpus}", *overrides], run)
    _, objects = train(cfg)
    return {k: float(v) for k, v in objects["trainer"].callback_metrics.items()}


def evaluate_shards(run: Path, shards: list[str], out: Path, *overrides: str) -> tuple[dict, dict]:
    """``seed-asr eval`` of ``run`` on ``shards`` into ``out``: the metrics, and ``results.json``."""
    shard_list = "[" + ",".join(shards) + "]"
    cfg = compose_config(
        "eval", [f"ckpt={run}", "device=cpu", f"shards={shard_list}", "data.num_workers=0", *overrides], out
    )
    metrics = evaluate(cfg)
    return metrics, json.loads((out / "results.json").read_text())


def hyps(out: Path) -> dict[str, dict]:
    """The lines of ``out/hyps.jsonl`` by key."""
    lines = (out / "hyps.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["key"]: row for row in map(json.loads, lines)}
