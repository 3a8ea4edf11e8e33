"""Data pipeline benchmark: audio seconds per wall second with 0/1/2 workers (decode, resample, batching,
fbank, SpecAugment; then 2 workers with speed perturbation too), padding with and without length
bucketing, and our batched fbank against kaldi-native-fbank per core, in one run.

    python scripts/bench_data.py                      # the built-in corpus in data/corpus
    python scripts/bench_data.py --synthetic          # synthetic shards written to a temporary folder
    python scripts/bench_data.py --json bench.json    # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import torch

from seed_asr.data.datamodule import ShardDataModule
from seed_asr.data.features import Fbank
from seed_asr.testing.synthetic import write_synthetic_shards


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default="data/corpus", help="corpus folder with train/*.tar")
    parser.add_argument("--synthetic", action="store_true", help="benchmark on synthetic shards instead")
    parser.add_argument(
        "--batches",
        type=int,
        default=300,
        help="batches timed per worker setting (one epoch: worker start-up and buffer filling count)",
    )
    parser.add_argument("--max-batch-seconds", type=float, default=60.0)
    parser.add_argument(
        "--bucket-buffer",
        type=int,
        default=100,
        help="bucketing buffer in the throughput runs (refilled per epoch)",
    )
    parser.add_argument("--fbank-utterances", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args()


def make_module(shards: str, workdir: Path, args: argparse.Namespace, **kwargs) -> ShardDataModule:
    options = dict(
        train_shards=shards,
        batches_per_epoch=args.batches,
        max_batch_seconds=args.max_batch_seconds,
        max_duration=min(30.0, args.max_batch_seconds),
        speed_factors=[1.0],
        output_dir=str(workdir),
        cmvn_utterances=50,
        persistent_workers=False,
    )
    dm = ShardDataModule(**{**options, **kwargs})
    dm.setup("fit")
    return dm


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def throughput(dm: ShardDataModule) -> tuple[float, float]:
    """Audio seconds per wall second and per CPU second (workers included) of one epoch: decode, resample,
    augmentation, batching, fbank and SpecAugment (the last two in this process, as on a GPU)."""
    seconds = 0.0
    start, start_cpu = time.perf_counter(), cpu_seconds()
    batches = iter(dm.train_dataloader())
    for batch in batches:
        dm.features(batch["audio"], batch["audio_lens"], augment=True)
        seconds += batch["stats"]["audio_seconds"]
    wall = time.perf_counter() - start
    del batches  # joins the (non-persistent) workers, so that their CPU time is counted
    return seconds / wall, seconds / (cpu_seconds() - start_cpu)


def best_cpu_time(run: Callable[[], object], repeats: int = 3) -> float:
    """Smallest CPU time of ``repeats`` runs (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def padding(dm: ShardDataModule) -> float:
    """Fraction of padded samples over all batches of an epoch."""
    valid = total = 0
    for batch in dm.train_dataloader():
        valid += int(batch["audio_lens"].sum())
        total += batch["audio"].numel()
    return 1.0 - valid / total


def fbank_speed(waves: list[np.ndarray]) -> tuple[float, float]:
    """Audio seconds per CPU second (one thread) of our batched fbank (batches of 16 sorted utterances)
    and of kaldi-native-fbank's compute (``accept_waveform``; reading frames back is not timed)."""
    seconds = sum(w.shape[0] for w in waves) / 16000
    ordered = sorted(waves, key=len)
    batches = [ordered[i : i + 16] for i in range(0, len(ordered), 16)]
    padded = []
    for group in batches:
        audio = torch.zeros(len(group), max(w.shape[0] for w in group))
        for row, wave in enumerate(group):
            audio[row, : wave.shape[0]] = torch.from_numpy(wave)
        padded.append((audio, torch.tensor([w.shape[0] for w in group])))
    fbank = Fbank()
    fbank(*padded[0])  # warm-up
    ours = best_cpu_time(lambda: [fbank(audio, lens) for audio, lens in padded])
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    lists = [w.tolist() for w in waves]

    def reference() -> None:
        for samples in lists:
            extractor = knf.OnlineFbank(opts)
            extractor.accept_waveform(16000, samples)
            extractor.input_finished()

    return seconds / ours, seconds / best_cpu_time(reference)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # per-core figures; DataLoader workers use one thread each anyway
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.synthetic:
            write_synthetic_shards(workdir / "train", 8, 60, 1.0, 8.0, seed=0)
            shards, source = str(workdir / "train" / "shard-*.tar"), "synthetic (1-8 s tones in noise)"
        else:
            shards, source = str(Path(args.corpus) / "train" / "shard-*.tar"), args.corpus
        results: dict[str, float | str] = {"source": source, "cpu_cores": os.cpu_count() or 0}
        for workers in (0, 1, 2):
            dm = make_module(shards, workdir, args, num_workers=workers, bucket_buffer=args.bucket_buffer)
            wall, cpu = throughput(dm)
            results[f"realtime_x_{workers}_workers"], results[f"cpu_realtime_x_{workers}_workers"] = wall, cpu
        speed = dict(num_workers=2, bucket_buffer=args.bucket_buffer, speed_factors=[0.9, 1.0, 1.1])
        results["realtime_x_2_workers_speed"], _ = throughput(make_module(shards, workdir, args, **speed))
        plain = dict(num_workers=0, spec_augment=False)
        results["padding_no_bucketing"] = padding(
            make_module(shards, workdir, args, bucket_buffer=0, **plain)
        )
        results["padding_bucketing"] = padding(make_module(shards, workdir, args, bucket_buffer=500, **plain))
        dm = make_module(shards, workdir, args, **plain)
        waves = list(itertools.islice(dm.plain_waves([shards]), args.fbank_utterances))
        results["fbank_ours_x_realtime"], results["fbank_knf_x_realtime"] = fbank_speed(waves)
    base = results["realtime_x_0_workers"]
    rows = [
        ("pipeline, 0 workers (audio s / wall s)", base, 1.0),
        ("pipeline, 1 worker", results["realtime_x_1_workers"], results["realtime_x_1_workers"] / base),
        ("pipeline, 2 workers", results["realtime_x_2_workers"], results["realtime_x_2_workers"] / base),
        (
            "pipeline, 2 workers, speed perturbation 0.9/1.0/1.1",
            results["realtime_x_2_workers_speed"],
            results["realtime_x_2_workers_speed"] / base,
        ),
        *(
            (f"pipeline, {w} workers (audio s / CPU s)", results[f"cpu_realtime_x_{w}_workers"], 1.0)
            for w in (0, 1, 2)
        ),
        ("padding fraction, no bucketing", results["padding_no_bucketing"], 1.0),
        (
            "padding fraction, bucketing (500)",
            results["padding_bucketing"],
            results["padding_bucketing"] / max(results["padding_no_bucketing"], 1e-9),
        ),
        ("fbank kaldi-native-fbank (audio s / CPU s, 1 thread)", results["fbank_knf_x_realtime"], 1.0),
        (
            "fbank ours, batched (audio s / CPU s, 1 thread)",
            results["fbank_ours_x_realtime"],
            results["fbank_ours_x_realtime"] / results["fbank_knf_x_realtime"],
        ),
    ]
    print(f"data: {source}")
    print(f"{'measure':52s} {'value':>10s} {'ratio':>8s}")
    for name, value, ratio in rows:
        print(f"{name:52s} {value:10.3f} {ratio:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
