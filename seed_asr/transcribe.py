"""``seed-asr transcribe --ckpt X [--checkpoint best] [--keywords "A, B"] [--context "..."]
[--joint-alpha 0.5] a.wav b.flac``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from seed_asr.artifacts.loading import load_speech_llm, pick_device
from seed_asr.data.audio import AudioError, decode_audio
from seed_asr.decoding.joint import JointConfig
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.utils.checkpoints import CHECKPOINT_HELP, RUN_CHECKPOINTS


def transcribe_files(
    ckpt: str,
    files: Sequence[str],
    decoding: DecodingConfig,
    context: dict | None = None,
    device: str = "auto",
    batch_size: int = 8,
    checkpoint: str = "last",
) -> list[tuple[str, str]]:
    """Transcribe audio files (any rate, mono or not) with a trained checkpoint.

    Args:
        ckpt: checkpoint file or run folder.
        files: audio paths.
        decoding: decoding settings; ``use_context`` puts ``context`` into every prompt.
        context: ``{"history": str, "keywords": [str]}`` shared by all files, or None.
        device: "auto", "cpu", "cuda", ...
        batch_size: files decoded together.
        checkpoint: which checkpoint of a run folder ``ckpt``: ``"last"`` or ``"best"``.

    Returns:
        (path, transcript) pairs in input order; unreadable files are reported on stderr and skipped.
    """
    dev = pick_device(device)
    loaded = load_speech_llm(ckpt, dev, checkpoint=checkpoint)
    waves = []
    for path in files:
        try:
            waves.append((path, torch.from_numpy(decode_audio(path))))
        except (AudioError, OSError) as err:
            print(f"seed-asr transcribe: skipping {path}: {err}", file=sys.stderr)
    results = []
    for i in range(0, len(waves), batch_size):
        chunk = waves[i : i + batch_size]
        lens = torch.tensor([len(w) for _, w in chunk])
        audio = torch.zeros(len(chunk), int(lens.max()))
        for row, (_, wave) in enumerate(chunk):
            audio[row, : len(wave)] = wave
        feats, feat_lens = loaded.features(audio.to(dev), lens.to(dev))
        metas = [{"context": context or {}} for _ in chunk]
        batch = {"feats": feats, "feat_lens": feat_lens, "metas": metas}
        results.extend(zip([p for p, _ in chunk], transcripts(loaded.model, batch, decoding), strict=True))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: prints ``<path>\\t<transcript>`` per file."""
    parser = argparse.ArgumentParser(prog="seed-asr transcribe", description=__doc__)
    parser.add_argument("files", nargs="+", help="audio files (wav, flac, ...)")
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
    parser.add_argument("--checkpoint", default="last", choices=RUN_CHECKPOINTS, help=CHECKPOINT_HELP)
    parser.add_argument("--context", default="", help="dialogue history put into the prompt")
    parser.add_argument("--keywords", default="", help="comma-separated hot words put into the prompt")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument(
        "--joint-alpha",
        type=float,
        default=None,
        help="joint beam search: rank by A * log P(y|x,context) + (1 - A) * log P(y|x)",
    )
    parser.add_argument(
        "--joint-prune",
        type=float,
        default=None,
        help="joint beam search: drop tokens this far (nats) below the best context-free token",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    keywords = [k.strip() for k in args.keywords.split(",") if k.strip()]
    use_context = bool(args.context or keywords)
    joint = args.joint_alpha is not None
    decoding = DecodingConfig(
        method="joint_beam" if joint else "beam" if args.beam > 1 else "greedy",
        beam_size=args.beam,
        nbest=1,
        use_context=use_context,
        joint=JointConfig(args.joint_alpha, args.joint_prune) if joint else JointConfig(),
    )
    context = {"history": args.context, "keywords": keywords} if use_context else None
    results = transcribe_files(
        args.ckpt, args.files, decoding, context, args.device, checkpoint=args.checkpoint
    )
    for path, text in results:
        print(f"{path}\t{text}")


if __name__ == "__main__":
    main()
