"""Benchmark the decoupleQ Triton kernels against an fp16 matmul measured in the same run.

For each batch M, shape (K, N) and weight format (batches outermost, the decode and prefill targets
M = 1 and M = 2048 first, so that an interrupted run keeps them) it reports the kernel time, the fp16
``torch.nn.functional.linear`` time, the speed-up, the achieved memory bandwidth (bytes of codes,
scales, zeros, activations and outputs over time) as a fraction of the card's peak, and the error
against the torch reference, and which kernel path ran (gemv or dequant + cuBLAS). ``--quick`` runs
tiny shapes (also on the CPU under TRITON_INTERPRET=1, where times are meaningless and only the code
path is exercised).

    python scripts/bench_kernels.py --json bench.json          # GPU
    TRITON_INTERPRET=1 python scripts/bench_kernels.py --quick  # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from decoupleq.kernels.packing import pack
from decoupleq.kernels.reference import dequant_matmul_reference, num_groups

FORMATS = (("W2 g64", 2, 64), ("W3 g64", 3, 64), ("W4 g64", 4, 64), ("W2 per-channel", 2, -1))
SHAPES = ((4096, 4096), (4096, 11008), (8192, 8192))
BATCHES = (1, 2048, 16, 256, 64)
QUICK_SHAPES, QUICK_BATCHES = ((256, 192),), (1, 80)
PEAK_TBS = {"H200": 4.8, "H100 PCIe": 2.0, "H100": 3.35}  # first match wins; SXM/HBM3 H100 = 3.35


def peak_bandwidth(device_name: str, override: float | None) -> float | None:
    """Peak memory bandwidth in TB/s of the named card, or ``override``."""
    if override is not None:
        return override
    return next((tbs for key, tbs in PEAK_TBS.items() if key in device_name), None)


def time_ms(fn: Callable[[], object], on_gpu: bool, cudagraph: bool = False) -> float:
    """Median time of ``fn`` in ms (triton.testing.do_bench on a GPU, wall clock otherwise).

    With ``cudagraph`` the calls are replayed from a captured CUDA graph, which removes the host
    time of each launch (Python, dispatch, autotuner look-up) and leaves the GPU time.
    """
    if on_gpu:
        import triton.testing

        if cudagraph:
            return triton.testing.do_bench_cudagraph(fn, rep=50)
        return triton.testing.do_bench(fn, warmup=10, rep=50)
    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def make_weights(k: int, n: int, bits: int, group: int, device: str) -> dict:
    """Random codes (packed), column-major fp16 scales/zeros (as QuantLinear stores them)."""
    g = torch.Generator(device=device).manual_seed(0)
    groups = num_groups(k, group)
    q = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n, k), generator=g, device=device)
    scale = (torch.rand(groups, n, generator=g, device=device) * 0.02 + 0.001).half().t()
    zero = (torch.randn(groups, n, generator=g, device=device) * 0.01).half().t()
    return {"packed": pack(q, bits), "scales": scale, "zeros": zero, "bits": bits, "group_size": group}


def bench_case(w: dict, weight: torch.Tensor, m: int, on_gpu: bool, cudagraph: bool = False) -> dict:
    """Time one (shape, batch, format) against fp16 ``weight`` (N, K) and check it against the reference."""
    from decoupleq.kernels.triton import GEMV_MAX_M, dequant_matmul_triton

    n, k = weight.shape
    x = torch.randn(m, k, device=weight.device).half()
    run = lambda: dequant_matmul_triton(x, **w)
    y = run()  # autotunes on the first call of a shape
    ref = dequant_matmul_reference(x.float(), w["packed"], w["scales"].float(), w["zeros"].float(),
                                   w["bits"], w["group_size"])  # fmt: skip
    rel_err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
    t_q = time_ms(run, on_gpu, cudagraph)
    t_fp16 = time_ms(lambda: torch.nn.functional.linear(x, weight), on_gpu, cudagraph)
    io_bytes = 2 * m * (k + n)
    q_bytes = w["packed"].numel() * 4 + 2 * w["scales"].numel() * 2 + io_bytes
    return {"K": k, "N": n, "M": m, "bits": w["bits"], "group_size": w["group_size"],
            "path": "gemv" if m <= GEMV_MAX_M else "dequant", "ms": t_q,
            "fp16_ms": t_fp16, "speedup": t_fp16 / t_q, "bytes": q_bytes, "fp16_bytes": 2 * n * k + io_bytes,
            "rel_err": rel_err}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--peak-tbs", type=float, help="peak bandwidth, TB/s (default: by card name)")
    parser.add_argument(
        "--batches", type=lambda s: [int(v) for v in s.split(",")], help="M values, e.g. 1,2048"
    )
    parser.add_argument("--cudagraph", action="store_true", help="time CUDA-graph replays (GPU time only)")
    args = parser.parse_args()

    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    name = torch.cuda.get_device_name() if on_gpu else "cpu (Triton interpreter)"
    peak = peak_bandwidth(name, args.peak_tbs) if on_gpu else None
    import triton

    print(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}; peak {peak} TB/s")
    shapes, batches = (QUICK_SHAPES, QUICK_BATCHES) if args.quick else (SHAPES, BATCHES)
    batches = args.batches or batches
    rows = []
    meta = {
        "device": name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "peak_tbs": peak,
        "cudagraph": args.cudagraph,
    }
    print(f"{'K x N':>12} {'M':>5} {'format':>15} {'path':>8} {'ms':>9} {'fp16 ms':>9} {'speedup':>8} "
          f"{'BW frac':>8} {'err':>8}")  # fmt: skip
    weights, fp16_weights = {}, {}
    for m in batches:
        for k, n in shapes:
            if (k, n) not in fp16_weights:
                fp16_weights[k, n] = torch.randn(n, k, device=device).half() * 0.02
            for label, bits, group in FORMATS:
                if (k, n, label) not in weights:
                    weights[k, n, label] = make_weights(k, n, bits, group, device)
                row = bench_case(weights[k, n, label], fp16_weights[k, n], m, on_gpu, args.cudagraph)
                row["format"] = label
                tbs = row["bytes"] / row["ms"] / 1e9
                row["tb_per_s"], row["bw_fraction"] = tbs, (tbs / peak if peak else None)
                row["fp16_bw_fraction"] = row["fp16_bytes"] / row["fp16_ms"] / 1e9 / peak if peak else None
                rows.append(row)
                frac = f"{row['bw_fraction']:.2f}" if peak else "-"
                print(f"{f'{k}x{n}':>12} {m:>5} {label:>15} {row['path']:>8} {row['ms']:9.4f} "
                      f"{row['fp16_ms']:9.4f} {row['speedup']:8.2f} {frac:>8} {row['rel_err']:8.1e}",
                      flush=True)  # fmt: skip
                if args.json:  # rewritten after every row so that an interrupted run keeps its results
                    args.json.write_text(json.dumps({**meta, "results": rows}, indent=1))
    print_markdown(rows)


def print_markdown(rows: list[dict]) -> None:
    """The results as a markdown table, ordered by shape, format and M (for docs/benchmarks_kernels.md)."""
    print(
        "| K x N | M | format | path | kernel ms | fp16 ms | speed-up | BW fraction | fp16 BW fraction "
        "| rel. err |\n" + "|---" * 10 + "|"
    )
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    order = {label: i for i, (label, _, _) in enumerate(FORMATS)}
    for r in sorted(rows, key=lambda r: (r["K"], r["N"], order[r["format"]], r["M"])):
        print(
            f"| {r['K']}x{r['N']} | {r['M']} | {r['format']} | {r['path']} | {r['ms']:.4f} "
            f"| {r['fp16_ms']:.4f} | {r['speedup']:.2f} | {fmt(r['bw_fraction'])} "
            f"| {fmt(r['fp16_bw_fraction'])} | {r['rel_err']:.1e} |"
        )


if __name__ == "__main__":
    main()
