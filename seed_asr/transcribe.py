"""``seed-asr transcribe --ckpt X [--checkpoint best] [--keywords "A, B"] [--context "..."]
[--joint-alpha 0.5] a.wav b.flac``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass

import torch

from seed_asr.artifacts.loading import load_speech_llm, pick_device
from seed_asr.data.audio import AudioError, decode_audio
from seed_asr.decoding.joint import JointConfig
from seed_asr.decoding.recognize import DecodingConfig, transcripts
from seed_asr.utils.checkpoints import CHECKPOINT_HELP, RUN_CHECKPOINTS


@dataclass(frozen=True)
class Transcript:
    """What became of one input file: its transcript, or why it has none."""

    path: str
    text: str | None = None
    error: str | None = None


def read_audio(path: str) -> torch.Tensor:
    """The (S,) float32 16 kHz samples of an audio file: the one place transcription reads audio.

    Raises:
        AudioError, OSError: the file cannot be read or its audio is unusable.
    """
    return torch.from_numpy(decode_audio(path))


def transcribe_files(
    ckpt: str,
    files: Sequence[str],
    decoding: DecodingConfig,
    context: dict | None = None,
    device: str = "auto",
    batch_size: int = 8,
    checkpoint: str = "last",
) -> Iterator[Transcript]:
    """Transcribe audio files (any rate, mono or not) with a trained checkpoint, batch by batch.

    A clip shorter than the encoder's shortest input is padded with silence to it. A file that cannot be
    read, or whose decoding fails, yields its error and the other files go on: a batch that fails is
    decoded again file by file.

    Args:
        ckpt: checkpoint file or run folder.
        files: audio paths.
        decoding: decoding settings; ``use_context`` puts ``context`` into every prompt.
        context: ``{"history": str, "keywords": [str]}`` shared by all files, or None.
        device: "auto", "cpu", "cuda", ...
        batch_size: files decoded together.
        checkpoint: which checkpoint of a run folder ``ckpt``: ``"last"`` or ``"best"``.

    Yields:
        One ``Transcript`` per file, in input order, each batch's as soon as it is decoded.
    """
    dev = pick_device(device)
    loaded = load_speech_llm(ckpt, dev, checkpoint=checkpoint)
    fbank = loaded.features.fbank
    min_samples = fbank.window_length + (loaded.model.encoder.min_input_frames - 1) * fbank.hop

    def decode(waves: list[torch.Tensor]) -> list[str]:
        lens = torch.tensor([max(len(w), min_samples) for w in waves])
        audio = torch.zeros(len(waves), int(lens.max()))
        for row, wave in enumerate(waves):
            audio[row, : len(wave)] = wave
        feats, feat_lens = loaded.features(audio.to(dev), lens.to(dev))
        metas = [{"context": context or {}} for _ in waves]
        return transcripts(loaded.model, {"feats": feats, "feat_lens": feat_lens, "metas": metas}, decoding)

    def decode_each(waves: list[torch.Tensor]) -> list[str | Exception]:
        """``decode``, or where the batch fails, each wave on its own (a failing one gives its error)."""
        try:
            return decode(waves) if waves else []
        except (ValueError, RuntimeError) as err:
            if len(waves) == 1:
                return [err]
        return [out for wave in waves for out in decode_each([wave])]

    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        read = [_read_or_error(path) for path in chunk]
        texts = iter(decode_each([r for r in read if isinstance(r, torch.Tensor)]))
        for path, wave in zip(chunk, read, strict=True):
            out = next(texts) if isinstance(wave, torch.Tensor) else wave
            if isinstance(out, str):
                yield Transcript(path, text=out)
            else:
                yield Transcript(path, error=f"{type(out).__name__}: {out}")


def _read_or_error(path: str) -> torch.Tensor | Exception:
    try:
        return read_audio(path)
    except (AudioError, OSError) as err:
        return err


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints ``<path>\\t<transcript>`` per file as its batch is decoded, and
    nothing else, on stdout; a file without transcript is named on stderr.

    Returns:
        The exit status: 0 when every file has its transcript, else 1.
    """
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
    out, failed = sys.stdout, 0
    with redirect_stdout(sys.stderr):  # libraries' prints and logs (DeepSpeed's) stay off stdout
        for item in transcribe_files(
            args.ckpt, args.files, decoding, context, args.device, checkpoint=args.checkpoint
        ):
            if item.error is None:
                print(f"{item.path}\t{item.text}", file=out, flush=True)
            else:
                failed += 1
                print(f"seed-asr transcribe: skipping {item.path}: {item.error}", file=sys.stderr)
    if failed:
        print(f"seed-asr transcribe: {failed} of {len(args.files)} files failed", file=sys.stderr)
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
