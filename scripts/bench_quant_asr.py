"""decoupleQ against RTN, GPTQ and HQQ on a project speech LLM, scored by WER on its corpus' test split.

Every method quantizes the same float checkpoint (a fresh copy each time) at each setting of
`conf/quant/<setting>.yaml` (its parts, include / exclude and calibration batches), and each model is
scored by `seed-asr eval`'s evaluation in this process. The project's methods (`rtn`, `gptq`,
`decoupleq`, `decoupleq+bw`) use the same calibration batches; HQQ (PyPI `hqq`, scored when installed)
needs none: its weights are put in place fake-quantized (float weights on its grid, the arithmetic of
its packed layers). llmcompressor's GPTQ, the other peer of `bench_quant.py`, needs a Hugging Face model
fed token ids and cannot take a speech LLM; the library's GPTQ stands for it (within 0.3% of its
perplexity there).

Each evaluation writes `<out>/<setting>_<method>/results.json` and is skipped when that exists, so an
interrupted run resumes.

Usage: PYTHONPATH=. python scripts/bench_quant_asr.py --ckpt runs/demo/rl --corpus runs/demo/corpus \
           [--settings w2g64 w3g64] [--methods rtn gptq decoupleq decoupleq+bw hqq] [--out bench_quant_asr]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from quant_peers import hqq_available, hqq_weight

from seed_asr.artifacts.loading import LoadedModel, load_speech_llm
from seed_asr.config import compose_config
from seed_asr.demo.quant import error_rates
from seed_asr.eval import evaluate
from seed_asr.quant.spec import QuantSpec
from seed_asr.quant.speech_llm import block_plan, calibration_batches, quantize_speech_llm, selected_linears

# label -> (method, block-wise refinement); "hqq" is the peer
METHODS = {"rtn": ("rtn", False), "gptq": ("gptq", False), "decoupleq": ("decoupleq", False),
           "decoupleq+bw": ("decoupleq", True), "hqq": (None, False)}


def hqq_in_place(model: torch.nn.Module, spec: QuantSpec) -> int:
    """Replace every linear that ``spec`` selects by HQQ's fake-quantized weight; returns their number."""
    count = 0
    for segment in block_plan(model, spec.parts):
        for block in segment.blocks:
            for linear in selected_linears(model, block, spec).values():
                with torch.no_grad():
                    linear.weight.copy_(hqq_weight(linear.weight, spec.config.bits, spec.config.group_size))
                count += 1
    return count


def quantized(args: argparse.Namespace, setting: str, label: str, batches: list[dict[str, Any]] | None
              ) -> tuple[LoadedModel, dict[str, float]]:
    """A fresh copy of the float model quantized with ``label`` at ``setting``, and its times."""
    loaded = load_speech_llm(args.ckpt, args.device)
    if label == "fp":
        return loaded, {}
    method, blockwise = METHODS[label]
    cfg = compose_config("quantize", [f"ckpt={args.ckpt}", f"quant={setting}"])
    spec = QuantSpec.from_cfg(cfg.quant, method or "rtn", blockwise)
    start = time.perf_counter()
    if method is None:
        hqq_in_place(loaded.model, spec)
        return loaded, {"seconds": time.perf_counter() - start}
    report = quantize_speech_llm(loaded.model, batches, spec, device=args.device).to_dict()
    return loaded, {"seconds": report["seconds"], "solver_seconds": report["solver_seconds"],
                    "mean_error": report["mean_error"]}


def calibration(args: argparse.Namespace, setting: str) -> list[dict[str, Any]]:
    """The calibration batches of ``setting`` (as ``seed-asr quantize`` reads them)."""
    cfg = compose_config("quantize", [f"ckpt={args.ckpt}", f"quant={setting}",
                                      f"paths.corpus_dir={args.corpus}"])
    loaded = load_speech_llm(args.ckpt, args.device)
    datamodule = instantiate(cfg.data, output_dir=str(args.out))
    return calibration_batches(datamodule.train_dataloader(), loaded.features, cfg.quant.calib_batches,
                               torch.device(args.device))


def score(args: argparse.Namespace, setting: str, label: str, batches: list[dict[str, Any]] | None
          ) -> dict[str, Any]:
    """WER of ``label`` at ``setting`` (read back when its evaluation exists)."""
    folder = args.out / ("fp" if label == "fp" else f"{setting}_{label}")
    results = folder / "results.json"
    if not results.exists():
        loaded, times = quantized(args, setting, label, batches)
        cfg = compose_config("eval", [f"ckpt={args.ckpt}", f"paths.corpus_dir={args.corpus}",
                                      f"device={args.device}", *args.eval_overrides], folder)
        evaluate(cfg, loaded)
        (folder / "times.json").write_text(json.dumps(times))
    metrics = json.loads(results.read_text())["metrics"]
    times = json.loads((folder / "times.json").read_text())
    return {**error_rates(metrics), **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a float speech-LLM checkpoint or run folder")
    parser.add_argument("--corpus", required=True, help="its corpus folder (calibration: train, score: test)")
    parser.add_argument("--settings", nargs="+", default=["w2g64"], help="conf/quant/ names")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--eval-overrides", nargs="*", default=[], help="extra `seed-asr eval` overrides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench_quant_asr"))
    args = parser.parse_args()
    methods = [m for m in args.methods if m != "hqq" or hqq_available()]
    result: dict[str, Any] = {"fp": score(args, "", "fp", None)}
    print(f"full precision: WER {100 * result['fp']['wer']:.1f}%")
    for setting in args.settings:
        batches = calibration(args, setting) if any(METHODS[m][0] for m in methods) else None
        rows = result[setting] = {m: score(args, setting, m, batches) for m in methods}
        print(f"\n{setting}: WER all / en, CER zh (%), quantization s (solver s)")
        for label, row in rows.items():
            rates = " / ".join("-" if row[k] is None else f"{100 * row[k]:.1f}"
                               for k in ("wer", "wer_en", "cer_zh"))
            solver = f" ({row['solver_seconds']:.1f})" if "solver_seconds" in row else ""
            print(f"  {label:13s} {rates:20s} {row.get('seconds', 0.0):7.1f}{solver}")
        ours = min(((rows[m]["wer"], m) for m in ("decoupleq", "decoupleq+bw") if m in rows), default=None)
        peers = {m: rows[m]["wer"] for m in ("gptq", "hqq") if m in rows}
        if ours and peers:
            ahead = all(ours[0] < wer for wer in peers.values())
            against = ", ".join(f"{m} {100 * w:.1f}%" for m, w in peers.items())
            print(f"  decoupleQ ahead of {', '.join(peers)}: {'met' if ahead else 'NOT met'} "
                  f"({ours[1]} {100 * ours[0]:.1f}% vs {against})")
    (args.out / "bench_quant_asr.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
