"""Webdataset shards of the project (``docs/interfaces.md``): the record, the writer, and conversion of
real corpora (a JSONL manifest, a LibriSpeech folder) into the same format.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.data.parallel import ordered_map
from seed_asr.data.transcode import transcode_to_flac

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-%06d.tar"
_KEY = re.compile(r"[A-Za-z0-9_-]+")


def make_record(
    *,
    text: str,
    lang: str,
    domain: str,
    speaker: str,
    duration: float,
    history: str = "",
    keywords: Sequence[str] = (),
    entities: Sequence[str] = (),
    dialogue: str = "",
    phonemes: str | None = None,
) -> dict[str, Any]:
    """The JSON record of one utterance, with the keys and order of the contract (``phonemes``, the IPA
    string the utterance was read as, only when known)."""
    if isinstance(keywords, str) or isinstance(entities, str):
        raise TypeError(f"keywords and entities must be sequences of strings, got {keywords!r}, {entities!r}")
    record = {
        "text": text,
        "lang": lang,
        "domain": domain,
        "speaker": speaker,
        "duration": round(float(duration), 3),
        "context": {"history": history, "keywords": list(keywords), "entities": list(entities)},
        "dialogue": dialogue,
    }
    if phonemes is not None:
        record["phonemes"] = phonemes
    return record


def check_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError naming what in ``record`` breaks the contract."""
    strings = ("text", "lang", "domain", "speaker", "dialogue")
    expected = {*strings, "duration", "context"}
    if set(record) - {"phonemes"} != expected:
        raise ValueError(f"record keys {sorted(record)} differ from {sorted(expected)} (+ optional phonemes)")
    if not isinstance(record.get("phonemes", ""), str):
        raise ValueError(f"record phonemes must be a string, got {record['phonemes']!r}")
    for key in strings:
        if not isinstance(record[key], str):
            raise ValueError(f"record {key!r} must be a string, got {record[key]!r}")
    if not record["text"].strip():
        raise ValueError("record text is empty")
    if not isinstance(record["duration"], (int, float)) or record["duration"] <= 0:
        raise ValueError(f"record duration must be a positive number, got {record['duration']!r}")
    context = record["context"]
    if not isinstance(context, Mapping) or set(context) != {"history", "keywords", "entities"}:
        raise ValueError(f"record context must have history, keywords, entities; got {context!r}")
    if not isinstance(context["history"], str):
        raise ValueError(f"context history must be a string, got {context['history']!r}")
    for key in ("keywords", "entities"):
        if not isinstance(context[key], list) or not all(isinstance(w, str) for w in context[key]):
            raise ValueError(f"context {key} must be a list of strings, got {context[key]!r}")


class SplitWriter:
    """Writes the samples of one split as ``<out_dir>/<split>/shard-XXXXXX.tar``.

    Shards are reproducible (fixed tar member times and owners), so the same samples give the same bytes.
    The first shard is opened on the first sample: an empty split writes no file.

    Args:
        out_dir: corpus folder.
        split: split name (sub-folder).
        shard_size: samples per shard.
        overwrite: delete shards already in the split folder; otherwise their presence is an error.
    """

    def __init__(self, out_dir: str | Path, split: str, shard_size: int, overwrite: bool = False) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder = prepare_split_dir(out_dir, split, overwrite)
        self.shard_size = shard_size
        self.num_samples = 0
        self.seconds = 0.0
        self._writer: wds.ShardWriter | None = None

    def write(self, key: str, flac: bytes, record: Mapping[str, Any]) -> None:
        """Add one sample; ``key`` may hold letters, digits, "_" and "-" only (webdataset splits at dots)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"sample key {key!r} may only contain letters, digits, '_' and '-'")
        if self._writer is None:
            pattern = str(self.folder / SHARD_PATTERN)
            self._writer = wds.ShardWriter(pattern, maxcount=self.shard_size, verbose=0, mtime=0.0,
                                           user="seed-asr", group="seed-asr")
        payload = json.dumps(record, ensure_ascii=False).encode("utf-8")
        self._writer.write({"__key__": key, "flac": flac, "json": payload})
        self.num_samples += 1
        self.seconds += float(record["duration"])

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_split_dir(out_dir: str | Path, split: str, overwrite: bool) -> Path:
    """Create ``<out_dir>/<split>``; existing shards there are deleted when ``overwrite``, else an error."""
    folder = Path(out_dir) / split
    old = sorted(folder.glob("shard-*.tar"))
    if old and not overwrite:
        raise FileExistsError(f"{folder} already holds {len(old)} shards; pass overwrite=true to replace")
    for path in old:
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class ConversionSummary:
    """What a conversion wrote and skipped.

    Attributes:
        written: samples written.
        skipped: entries skipped (missing, unreadable or malformed).
        hours: audio written.
        shards: shard files written.
        skipped_items: "name: reason" of each skipped entry.
    """

    written: int = 0
    skipped: int = 0
    hours: float = 0.0
    shards: int = 0
    skipped_items: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        log.warning("skipping %s: %s", name, reason)
        self.skipped += 1
        self.skipped_items.append(f"{name}: {reason}")


@dataclass(frozen=True)
class _Entry:
    """One utterance to convert: its key, audio file and record fields other than the duration."""

    key: str
    audio: Path
    fields: dict[str, Any]


def _write_entries(
    entries: Iterable[_Entry | tuple[str, str]],
    out_dir: str | Path,
    split: str,
    shard_size: int,
    num_workers: int | None,
    overwrite: bool,
) -> ConversionSummary:
    """Encode ``entries`` in parallel and write them; (name, reason) tuples among them are skips."""
    summary = ConversionSummary()
    entries = list(entries)
    valid = [e for e in entries if isinstance(e, _Entry)]
    for name, reason in (e for e in entries if not isinstance(e, _Entry)):
        summary.skip(name, reason)
    with SplitWriter(out_dir, split, shard_size, overwrite) as writer:
        results = ordered_map(transcode_to_flac, [entry.audio for entry in valid], num_workers)
        for entry, result in zip(valid, results, strict=True):
            if isinstance(result, str):
                summary.skip(str(entry.audio), result)
                continue
            flac, num_samples = result
            writer.write(entry.key, flac, make_record(duration=num_samples / SAMPLE_RATE, **entry.fields))
        summary.written, summary.shards = writer.num_samples, writer.num_shards
        summary.hours = writer.seconds / 3600
    log.info("wrote %d samples (%.2f h) in %d shards to %s, skipped %d", summary.written, summary.hours,
             summary.shards, writer.folder, summary.skipped)
    return summary


def _manifest_entries(manifest: Path, lang: str, domain: str) -> Iterator[_Entry | tuple[str, str]]:
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            name = f"{manifest}:{number}"
            try:
                item = json.loads(line)
                audio = manifest.parent / item["audio_filepath"]
                context = {"history": "", "keywords": [], "entities": [], **item.get("context", {})}
                fields = {
                    "text": item["text"],
                    "lang": item.get("lang", lang),
                    "domain": item.get("domain", domain),
                    "speaker": str(item.get("speaker", "")),
                    "dialogue": str(item.get("dialogue", "")),
                    **context,
                }
                check_record(make_record(duration=1.0, **fields))
            except (ValueError, KeyError, TypeError) as err:
                yield name, f"malformed manifest line ({type(err).__name__}: {err})"
                continue
            key = f"{re.sub(r'[^A-Za-z0-9_-]', '_', audio.stem)}-{number:08d}"
            yield _Entry(key, audio, fields)


def convert_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    split: str = "train",
    shard_size: int = 1000,
    lang: str = "en",
    domain: str = "manifest",
    num_workers: int | None = None,
    overwrite: bool = False,
) -> ConversionSummary:
    """Convert a JSONL manifest into ``<out_dir>/<split>/shard-XXXXXX.tar``.

    Each line holds ``audio_filepath`` (relative paths resolve against the manifest's folder) and
    ``text``; optionally ``lang``, ``domain``, ``speaker``, ``dialogue`` and ``context`` (history,
    keywords, entities), else ``lang``/``domain`` given here and an empty context. ``duration`` is
    measured from the decoded audio. Missing or unreadable audio and malformed lines are logged by
    name, counted and skipped.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist")
    entries = _manifest_entries(manifest, lang, domain)
    return _write_entries(entries, out_dir, split, shard_size, num_workers, overwrite)


def _librispeech_entries(root: Path, lang: str, domain: str) -> Iterator[_Entry | tuple[str, str]]:
    transcripts = sorted(root.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise FileNotFoundError(f"{root} holds no <speaker>/<chapter>/*.trans.txt: not a LibriSpeech folder")
    for transcript in transcripts:
        for number, line in enumerate(transcript.read_text(encoding="utf-8").splitlines(), start=1):
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            parts = utt.split("-")
            if not text.strip() or len(parts) != 3 or not _KEY.fullmatch(utt):
                yield f"{transcript}:{number}", "malformed transcript line"
                continue
            speaker, chapter, _ = parts
            fields = {"text": text.strip(), "lang": lang, "domain": domain, "speaker": speaker,
                      "dialogue": f"{speaker}-{chapter}"}
            yield _Entry(utt, transcript.parent / f"{utt}.flac", fields)


def convert_librispeech(
    root: str | Path,
    out_dir: str | Path,
    *,
    split: str = "train",
    shard_size: int = 1000,
    lang: str = "en",
    domain: str = "librispeech",
    num_workers: int | None = None,
    overwrite: bool = False,
) -> ConversionSummary:
    """Convert a LibriSpeech folder (``<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` beside
    ``<utterance>.flac``) into ``<out_dir>/<split>/shard-XXXXXX.tar``.

    The speaker id becomes ``speaker``, ``<speaker>-<chapter>`` the ``dialogue``; the context is empty.
    Missing or unreadable audio is logged by name, counted and skipped.
    """
    entries = _librispeech_entries(Path(root), lang, domain)
    return _write_entries(entries, out_dir, split, shard_size, num_workers, overwrite)
