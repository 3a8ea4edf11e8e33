"""Cost of the SSL targets relative to the encoder they train, measured in one process.

Prints, for one batch: the random-projection quantizer's time as a ratio of a Conformer forward +
backward (bf16 autocast where there is a GPU); and, for fitting the second round's k-means, one
assignment pass (the cost of a Lloyd step) and a whole fit, as ratios of the same encoder step.

    python scripts/bench_ssl.py [--batch 16] [--seconds 15] [--d-model 512] [--layers 12]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from seed_asr.models.encoder import ConformerEncoder
from seed_asr.models.kmeans import fit_kmeans, nearest_centroid
from seed_asr.models.ssl_targets import RandomProjectionQuantizer


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--kmeans-frames", type=int, default=200_000)
    parser.add_argument("--kmeans-iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    frames = int(args.seconds * 100)
    feats = torch.randn(args.batch, frames, 80, device=device)
    lens = torch.full((args.batch,), frames, device=device)
    encoder = ConformerEncoder(d_model=args.d_model, num_layers=args.layers, num_heads=8).to(device)
    quantizer = RandomProjectionQuantizer(output_lengths=encoder.output_lengths).to(device)

    def encoder_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = encoder(feats, lens).hidden.float().square().mean()
        loss.backward()

    t_encoder = timed(encoder_step, device, args.repeats)
    t_quantizer = timed(lambda: quantizer(feats, lens), device, args.repeats)
    features = torch.randn(args.kmeans_frames, args.d_model, device=device)
    t_assign = timed(lambda: nearest_centroid(features, features[: args.clusters]), device, args.repeats)
    gen = torch.Generator(device=device).manual_seed(0)
    fit = lambda: fit_kmeans(features, args.clusters, max_iters=args.kmeans_iters, tol=-1.0, generator=gen)
    t_fit = timed(fit, device, 1)
    print(f"device {device}; batch {args.batch} x {args.seconds:g} s", end="; ")
    print(f"Conformer d={args.d_model} x {args.layers} blocks")
    print(f"encoder forward+backward     {t_encoder * 1e3:10.1f} ms  (baseline 1.00)")
    print(f"quantizer labels (8192 x 16) {t_quantizer * 1e3:10.1f} ms  ratio {t_quantizer / t_encoder:.3f}")
    print(f"k-means on {args.kmeans_frames} x {args.d_model} frames, K={args.clusters}:")
    print(f"  one assignment pass        {t_assign * 1e3:10.1f} ms  ratio {t_assign / t_encoder:.2f}")
    label = f"fit: seeding + {args.kmeans_iters} steps"
    print(f"  {label:<26} {t_fit * 1e3:10.1f} ms  ratio {t_fit / t_encoder:.2f}")


if __name__ == "__main__":
    main()
