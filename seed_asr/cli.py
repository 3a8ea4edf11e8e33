"""The `seed-asr <verb> [hydra overrides]` console script.

Each verb is a module ``seed_asr.<verb>`` run as ``__main__`` (a Hydra app, or argparse where a verb
takes file arguments), so ``seed-asr train stage=sft`` and ``python -m seed_asr.train stage=sft``
are the same command.
"""

from __future__ import annotations

import runpy
import sys

VERBS: dict[str, str] = {
    "corpus": "build the built-in synthetic speech corpus as webdataset shards",
    "shards": "convert a JSONL manifest or a LibriSpeech folder into shards",
    "train": "run one training stage (stage=ssl|lm|align|sft|...)",
    "eval": "evaluate a checkpoint on shards: results.json + hyps.jsonl",
    "transcribe": "print transcripts of audio files",
    "quantize": "decoupleQ post-training quantization of a checkpoint",
    "export": "convert a (DeepSpeed) checkpoint to safetensors / Hugging Face",
    "demo": "the staged demo on the built-in corpus, with its report",
}


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``argv[0]`` to ``seed_asr.<verb>.main`` with the remaining arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        width = max(map(len, VERBS))
        lines = [f"  {v:<{width}}  {h}" for v, h in VERBS.items()]
        print("usage: seed-asr <verb> [overrides ...]\n\nverbs:\n" + "\n".join(lines))
        sys.exit(0 if argv else 2)
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        sys.exit(f"seed-asr: unknown verb {verb!r}; choose one of {', '.join(VERBS)}")
    sys.argv = [f"seed-asr {verb}", *rest]
    # run as __main__ so Hydra resolves `config_path` relative to the module's file, as with `python -m`
    runpy.run_module(f"seed_asr.{verb}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
