"""Benchmark decoupleQ against round-to-nearest, GPTQ and other projects' quantizers on one model.

(a) trains a Llama-architecture byte-level model on text found on the machine (`--text`: the license
    texts, or `stdlib`, the running Python's standard library sources; or loads it from `--cache`), then
    quantizes it with each method and calibration (MODEL_METHODS) and reports the mean
    per-layer relative output error, held-out perplexity, wall time and the solvers' share of it; the
    peers of `quant_peers.py` (HQQ when installed, llmcompressor's GPTQ with `--llmcompressor-python`)
    quantize the same model and are scored by the same perplexity;
(b) quantizes the trained model's linear layers one by one on their full-precision inputs (same H for
    every method, HQQ included) plus a larger synthetic layer with correlated heavy-tailed inputs;
(c) measures the peak memory of decoupleQ's group-wise float step against the dense N x G x K
    formulation, on CPU (peak RSS of a fresh subprocess) and on CUDA when available.

Usage: PYTHONPATH=. python scripts/bench_quant.py [--device cuda] [--json bench_quant.json]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import multiprocessing
import os
import sysconfig
import time
from pathlib import Path

import torch
from quant_peers import hqq_available, hqq_model_weights, hqq_weight, llmcompressor_weights
from safetensors.torch import load_file, save_file
from torch import nn

from decoupleq import LayerQuantizer, QuantConfig, quantize_layer, quantize_model
from decoupleq.quantizer import relative_output_error
from decoupleq.solver import float_step

TEXT_GLOBS = ("/usr/share/common-licenses/*", "/usr/lib/python3*/LICENSE.txt")
SETTINGS = {"W2 g64": (2, 64), "W2 per-ch": (2, -1), "W3 g64": (3, 64), "W4 g64": (4, 64)}
ORDER = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["up_proj", "gate_proj"], ["down_proj"]]


def load_text(patterns: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte tokens of the distinct text files matched by `patterns` ("stdlib": the running Python's
    standard-library modules, `<stdlib>/*.py`): (train, held-out = last 10% of each)."""
    seen, train, held = set(), [], []
    stdlib = os.path.join(sysconfig.get_paths()["stdlib"], "*.py")
    patterns = [stdlib if p == "stdlib" else p for p in patterns]
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        with open(real, "rb") as f:
            data = f.read()
        cut = int(len(data) * 0.9)
        train.append(data[:cut])
        held.append(data[cut:])
    if not train:
        raise SystemExit(f"no text found under {patterns}")
    as_tensor = lambda chunks: torch.tensor(list(b"\n".join(chunks)), dtype=torch.long)  # noqa: E731
    return as_tensor(train), as_tensor(held)


def build_model(hidden: int, layers: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 32, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def train(model: nn.Module, tokens: torch.Tensor, steps: int, seq: int, batch: int, device: str) -> float:
    """Plain AdamW next-byte training; returns seconds."""
    start = time.perf_counter()
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        starts = torch.randint(0, tokens.numel() - seq - 1, (batch,), generator=gen)
        ids = torch.stack([tokens[s:s + seq] for s in starts]).to(device)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  train step {step:4d} loss {loss.item():.3f}", flush=True)
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def perplexity(model: nn.Module, tokens: torch.Tensor, seq: int, device: str, max_windows: int = 0) -> float:
    """Perplexity over the `seq`-byte windows of `tokens` (at most `max_windows`, evenly spaced; 0: all)."""
    usable = tokens.numel() // seq * seq
    windows = tokens[:usable].reshape(-1, seq)
    if 0 < max_windows < len(windows):
        windows = windows[torch.linspace(0, len(windows) - 1, max_windows).long()]
    windows = windows.to(device)
    losses = [model(input_ids=w[None], labels=w[None]).loss for w in windows]
    return math.exp(float(torch.stack(losses).mean()))


def calibration(tokens: torch.Tensor, count: int, seq: int, device: str) -> list[dict]:
    """`count` random windows, batches of 4; the last 8 positions of every other row are padding."""
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(0, tokens.numel() - seq, (count,), generator=gen)
    batches = []
    for b in range(0, count, 4):
        ids = torch.stack([tokens[s:s + seq] for s in starts[b:b + 4]])
        mask = torch.ones_like(ids)
        mask[1::2, -8:] = 0
        batches.append({"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": False})
    return batches


# part (a) rows: label -> (QuantConfig.method, block-wise refinement, calibration). Sequential
# calibration quantizes a block's linears group by group (ORDER), later groups seeing the quantized
# earlier ones; parallel calibrates all of a block's linears in one pass (llmcompressor's way); none
# rounds the weights where they are (data-free RTN, its layer error not measured). Blocks always receive
# the outputs of the quantized blocks before them.
MODEL_METHODS = {
    "rtn": ("rtn", False, "parallel"),
    "rtn (no data)": ("rtn", False, "none"),
    "rtn_clip": ("rtn_clip", False, "parallel"),
    "gptq": ("gptq", False, "sequential"),
    "gptq parallel": ("gptq", False, "parallel"),
    "decoupleq": ("decoupleq", False, "sequential"),
    "decoupleq+bw": ("decoupleq", True, "sequential"),
}
LAYER_METHODS = ("rtn", "rtn_clip", "gptq", "gptq dynamic", "decoupleq")  # part (b)


def config_for(method: str, bits: int, group: int, blockwise: bool = False) -> QuantConfig:
    """The benchmark's QuantConfig of `method` ("gptq dynamic": GPTQ without static groups)."""
    if method == "gptq dynamic":
        return QuantConfig(bits=bits, group_size=group, method="gptq", static_groups=False)
    if blockwise:
        return QuantConfig(bits=bits, group_size=group, method=method, blockwise=True, lr=1e-4, epochs=4)
    return QuantConfig(bits=bits, group_size=group, method=method)


def part_a(state: dict, held: torch.Tensor, batches: list[dict], args: argparse.Namespace, out: dict,
           peer_weights: dict[str, dict[str, tuple[dict[str, torch.Tensor], float]]]) -> None:
    """Whole-model quantization, every method from the same trained state; the peers' weights are loaded
    (their mean layer error is not measured on the sequential inputs: see part (b) for HQQ's)."""
    ref = build_model(args.hidden, args.layers)
    ref.load_state_dict(state)
    ref.to(args.device)
    ppl_fp = perplexity(ref, held, args.seq, args.device, args.eval_windows)
    out["fp32_ppl"] = ppl_fp
    print(f"\n(a) whole-model quantization of the trained model; fp32 held-out perplexity {ppl_fp:.3f}")
    print(f"{'setting':10s} {'method':20s} {'mean err':>9s} {'err/GPTQ':>9s} {'ppl':>8s} {'dppl/GPTQ':>10s} "
          f"{'time s':>7s} {'solver s':>8s} {'t/GPTQ':>7s}")
    for setting, (bits, group) in SETTINGS.items():
        rows = {}
        for label, (method, blockwise, calibration) in MODEL_METHODS.items():
            model = build_model(args.hidden, args.layers)
            model.load_state_dict(state)
            model.to(args.device).eval()
            report = quantize_model(model, lambda m=model: m.model.layers,
                                    None if calibration == "none" else batches,
                                    config_for(method, bits, group, blockwise),
                                    order=ORDER if calibration == "sequential" else None, device=args.device)
            rows[label] = {"mean_error": report.mean_error(), "seconds": report.seconds,
                           "solver_seconds": report.solver_seconds(), "calibration": calibration,
                           "ppl": perplexity(model, held, args.seq, args.device, args.eval_windows),
                           "refinement": {k: [v.loss_before, v.loss_after]
                                          for k, v in report.refinement.items()}}
        for label, (weights, seconds) in peer_weights.get(setting, {}).items():
            model = build_model(args.hidden, args.layers)
            model.load_state_dict({**state, **weights})
            model.to(args.device).eval()
            rows[label] = {"mean_error": float("nan"), "seconds": seconds, "solver_seconds": float("nan"),
                           "ppl": perplexity(model, held, args.seq, args.device, args.eval_windows)}
        gptq = rows["gptq"]
        for label, r in rows.items():
            r["error_vs_gptq"] = r["mean_error"] / gptq["mean_error"]
            # The ratio of perplexity increases is meaningless when GPTQ's increase is within noise.
            gptq_increase = gptq["ppl"] - ppl_fp
            r["dppl_vs_gptq"] = (r["ppl"] - ppl_fp) / gptq_increase if gptq_increase > 1e-3 * ppl_fp \
                else float("nan")
            r["time_vs_gptq"] = r["seconds"] / gptq["seconds"]
            print(f"{setting:10s} {label:20s} {r['mean_error']:9.4f} {r['error_vs_gptq']:9.3f} "
                  f"{r['ppl']:8.3f} {r['dppl_vs_gptq']:10.3f} {r['seconds']:7.2f} {r['solver_seconds']:8.2f} "
                  f"{r['time_vs_gptq']:7.2f}")
        out["whole_model"][setting] = rows
        dq, rtn = rows["decoupleq"], rows["rtn (no data)"]
        print(f"{setting:10s} calibration speed: RTN {rtn['seconds'] / dq['seconds']:.3f} x decoupleQ's time "
              f"(target < 0.10), decoupleQ {dq['seconds'] / dq['solver_seconds']:.2f} x its solver time "
              f"(target <= 2)")


def layer_hessians(model: nn.Module, batches: list[dict]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(W, H) of every linear inside the decoder layers, H from the full-precision model's inputs."""
    quantizers, handles, current = {}, [], {}
    for name, module in model.model.layers.named_modules():
        if isinstance(module, nn.Linear):
            quantizers[name] = (module, LayerQuantizer(module.weight, QuantConfig(group_size=-1), name))
            handles.append(module.register_forward_hook(
                lambda _m, a, _o, q=quantizers[name][1]: q.add_batch(a[0], current["mask"])))
    with torch.no_grad():
        for batch in batches:
            current["mask"] = batch["attention_mask"].bool()
            model(**batch)
    for h in handles:
        h.remove()
    return {n: (m.weight.detach().clone(), q.hessian()) for n, (m, q) in quantizers.items()}


def synthetic_layer(n: int, k: int, tokens: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """W (n, k) and H of correlated, heavy-tailed inputs with uneven channel scales."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(k, k, generator=gen) / k ** 0.5
    x = torch.randn(tokens, k, generator=gen) * torch.exp(0.5 * torch.randn(tokens, 1, generator=gen))
    x = (x @ mix) * torch.exp(0.7 * torch.randn(k, generator=gen))
    w = 0.02 * torch.randn(n, k, generator=gen)
    return w.to(device), ((x.double().T @ x.double()) / tokens).to(device)


def part_b(layers: dict[str, tuple[torch.Tensor, torch.Tensor]], args: argparse.Namespace, out: dict) -> None:
    print(f"\n(b) per-layer quantization on full-precision inputs ({len(layers) - 1} trained layers + "
          "1 synthetic)")
    print(f"{'setting':10s} {'layers':10s} {'method':13s} {'mean err':>9s} {'err/GPTQ':>9s} {'time s':>7s} "
          f"{'t/GPTQ':>7s}")
    synthetic = {k: v for k, v in layers.items() if k.startswith("synthetic")}
    trained = {k: v for k, v in layers.items() if not k.startswith("synthetic")}
    for setting, (bits, group) in SETTINGS.items():
        for label, subset in (("trained", trained), ("synthetic", synthetic)):
            rows = {}
            for method in LAYER_METHODS:
                config = config_for(method, bits, group)
                start = time.perf_counter()
                errors = [quantize_layer(w, h, config).error for w, h in subset.values()]
                seconds = time.perf_counter() - start
                rows[method] = {"mean_error": sum(errors) / len(errors), "seconds": seconds}
            if hqq_available():
                start = time.perf_counter()
                errors = [relative_output_error(w.double(), hqq_weight(w, bits, group).double(), h)
                          for w, h in subset.values()]
                rows["hqq"] = {"mean_error": sum(errors) / len(errors),
                               "seconds": time.perf_counter() - start}
            for method, r in rows.items():
                r["error_vs_gptq"] = r["mean_error"] / rows["gptq"]["mean_error"]
                r["time_vs_gptq"] = r["seconds"] / rows["gptq"]["seconds"]
                print(f"{setting:10s} {label:10s} {method:13s} {r['mean_error']:9.4f} "
                      f"{r['error_vs_gptq']:9.3f} {r['seconds']:7.2f} {r['time_vs_gptq']:7.2f}")
            out["per_layer"].setdefault(setting, {})[label] = rows


def dense_float_step_systems(q: torch.Tensor, h: torch.Tensor, group: int) -> torch.Tensor:
    """The dense formulation (reference-code style): each row's design A (G, K) of scale columns stacked
    into an N x G x K tensor, then A H A^T -> (N, G, G). Only the scale block: enough to show its memory."""
    n, k = q.shape
    member = torch.nn.functional.one_hot(torch.arange(k, device=q.device) // group).T.to(h.dtype)  # (G, K)
    design = member[None] * q.to(h.dtype)[:, None, :]  # (N, G, K)
    return torch.einsum("ngk,kl,nhl->ngh", design, h, design)


def _memory_child(kind: str, n: int, k: int, group: int, queue: multiprocessing.Queue) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(k, k, generator=gen, dtype=torch.float64)
    h = h @ h.T / k + torch.eye(k, dtype=torch.float64)
    w = torch.randn(n, k, generator=gen, dtype=torch.float64)
    q = torch.randint(-2, 2, (n, k), generator=gen).double()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident size (VmHWM) to the current one
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    if kind == "ours":
        float_step(w, q, h, group, False, row_chunk=256)
    else:
        dense_float_step_systems(q, h, group)
    seconds = time.perf_counter() - start
    queue.put(((_status_kib("VmHWM") - base) / 1024, seconds))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def part_c(args: argparse.Namespace, out: dict) -> None:
    group = 64
    print(f"\n(c) peak memory of the float step, group {group} (extra peak RSS of a fresh process, MiB)")
    print(f"{'N x K':>12s} {'G':>5s} {'N*G*K*8 MiB':>12s} {'ours MiB':>9s} {'dense MiB':>10s} {'ours s':>7s} "
          f"{'dense s':>8s}")
    # Fixed mmap threshold: large tensors are unmapped when freed, so RSS tracks live memory.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for n, k in ((256, 1024), (512, 1024), (1024, 1024), (512, 2048)):
        measured = {}
        for kind in ("ours", "dense"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_memory_child, args=(kind, n, k, group, queue))
            proc.start()
            measured[kind] = queue.get()
            proc.join()
        dense_bytes = n * (k // group) * k * 8
        rows.append({"n": n, "k": k, "groups": k // group, "dense_tensor_mib": dense_bytes / 2 ** 20,
                     "ours_mib": measured["ours"][0], "dense_mib": measured["dense"][0],
                     "ours_s": measured["ours"][1], "dense_s": measured["dense"][1]})
        r = rows[-1]
        print(f"{f'{n}x{k}':>12s} {k // group:5d} {r['dense_tensor_mib']:12.0f} {r['ours_mib']:9.0f} "
              f"{r['dense_mib']:10.0f} {r['ours_s']:7.2f} {r['dense_s']:8.2f}")
    out["memory_cpu"] = rows
    n, k = 4096, 11008
    dense_gib = n * (k // group) * k / 2 ** 30
    print(f"  {n}x{k} g{group}: dense N x G x K tensor = {dense_gib * 4:.1f} GiB in float32, "
          f"{dense_gib * 8:.1f} GiB in float64; ours holds H ({k * k * 8 / 2 ** 30:.2f} GiB) "
          f"+ per 256-row chunk {256 * (2 * k // group) ** 2 * 8 * 3 / 2 ** 30:.2f} GiB of systems")
    if torch.cuda.is_available():
        dev = "cuda"
        gen = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(4 * k, k, generator=gen, device=dev, dtype=torch.float64) / k ** 0.5
        h = x.T @ x / x.shape[0]
        del x
        w = torch.randn(n, k, generator=gen, device=dev)
        q = torch.randint(-2, 2, (n, k), generator=gen, device=dev).double()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        float_step(w, q, h, group, False, row_chunk=256)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
        seconds = time.perf_counter() - start
        print(f"  CUDA {n}x{k} g{group}: float step peak extra {peak:.2f} GiB (beyond W, q, H), "
              f"{seconds:.2f} s")
        out["memory_cuda_4096x11008"] = {"peak_extra_gib": peak, "seconds": seconds}
        config = QuantConfig(bits=2, group_size=group)
        times = {}
        for method in ("gptq", "decoupleq"):
            start = time.perf_counter()
            res = quantize_layer(w, h, QuantConfig(**{**config.to_dict(), "method": method}))
            torch.cuda.synchronize()
            times[method] = (time.perf_counter() - start, res.error)
        (tg, eg), (td, ed) = times["gptq"], times["decoupleq"]
        print(f"  CUDA {n}x{k} W2 g64: GPTQ {tg:.1f} s err {eg:.4f}; decoupleQ {td:.1f} s err {ed:.4f} "
              f"(time x{td / tg:.2f}, err x{ed / eg:.3f})")
        out["cuda_4096x11008_w2g64"] = {m: {"seconds": t, "error": e} for m, (t, e) in times.items()}


def peer_weights(model: nn.Module, batches: list[dict], args: argparse.Namespace
                 ) -> dict[str, dict[str, tuple[dict[str, torch.Tensor], float]]]:
    """setting -> peer label -> (the peer's quantized decoder-layer weights by state-dict name, seconds)."""
    peers: dict[str, dict[str, tuple[dict[str, torch.Tensor], float]]] = {}
    for setting, (bits, group) in SETTINGS.items():
        peers[setting] = {}
        if hqq_available():
            start = time.perf_counter()
            weights = hqq_model_weights(model.model.layers, "model.layers", bits, group)
            peers[setting]["hqq"] = weights, time.perf_counter() - start
        if args.llmcompressor_python:
            peers[setting]["gptq llmcompressor"] = llmcompressor_weights(
                args.llmcompressor_python, model, batches, bits, group, Path(args.work_dir))
    return peers


def trained_model(tokens: torch.Tensor, args: argparse.Namespace, out: dict) -> nn.Module:
    """The benchmark's model: trained here, or loaded from `--cache` when it holds the same recipe."""
    model = build_model(args.hidden, args.layers)
    text = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:8]  # the training text is part of the recipe
    name = f"llama_h{args.hidden}_l{args.layers}_s{args.steps}_q{args.seq}_t{text}.safetensors"
    cache = Path(args.cache) / name if args.cache else None
    print(f"a {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M-parameter Llama on "
          f"{tokens.numel()} bytes of text ({args.steps} steps)")
    if cache is not None and cache.exists():
        model.load_state_dict(load_file(cache))
        print(f"  loaded from {cache}")
        return model.to(args.device).eval()
    out["train_seconds"] = train(model, tokens, args.steps, args.seq, 16, args.device)
    print(f"  trained in {out['train_seconds']:.0f} s")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, cache)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--calib", type=int, default=32, help="calibration sequences")
    parser.add_argument("--synthetic", default="1024x2048", help="N x K of the synthetic layer in (b)")
    parser.add_argument("--parts", default="abc")
    parser.add_argument("--text", nargs="+", default=list(TEXT_GLOBS),
                        help="globs of the text files; stdlib: the running Python's standard library")
    parser.add_argument("--eval-windows", type=int, default=0,
                        help="held-out windows of the perplexity, evenly spaced (0: all)")
    parser.add_argument("--cache", default=None, help="folder keeping trained models between runs")
    parser.add_argument("--llmcompressor-python", default=None,
                        help="python of an environment with llmcompressor (make peers-env): adds its GPTQ")
    parser.add_argument("--work-dir", default="bench_quant_work", help="files exchanged with the peers")
    parser.add_argument("--json", default="bench_quant.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out: dict = {"args": vars(args), "whole_model": {}, "per_layer": {}}
    if "a" in args.parts or "b" in args.parts:
        train_tokens, held = load_text(args.text)
        model = trained_model(train_tokens, args, out)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        batches = calibration(train_tokens, args.calib, args.seq, args.device)
        if "a" in args.parts:
            part_a(state, held, batches, args, out, peer_weights(model, batches, args))
        if "b" in args.parts:
            layers = layer_hessians(model, batches)
            n, k = (int(v) for v in args.synthetic.split("x"))
            layers[f"synthetic {n}x{k}"] = synthetic_layer(n, k, 4 * k, args.device)
            part_b(layers, args, out)
    if "c" in args.parts:
        part_c(args, out)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
