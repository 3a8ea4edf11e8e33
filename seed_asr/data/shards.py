"""Webdataset shards of the project (``docs/interfaces.md``): the record, the writer, and conversion of
real corpora (a JSONL manifest, a LibriSpeech folder) into the same format.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
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
    They are written into a hidden staging folder inside the split folder and moved into place by
    :meth:`close` once all are complete; only then are old shards that the new set does not replace
    deleted (``overwrite``). Leaving a ``with`` block by an exception (or :meth:`abort`) discards the new
    shards and leaves the old ones untouched. An empty split writes no file.

    Args:
        out_dir: corpus folder.
        split: split name (sub-folder).
        shard_size: samples per shard.
        overwrite: replace shards already in the split folder; otherwise their presence is an error.
    """

    def __init__(self, out_dir: str | Path, split: str, shard_size: int, overwrite: bool = False) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder = Path(out_dir) / split
        old = split_shards(self.folder)
        if old and not overwrite:
            raise FileExistsError(
                f"{self.folder} already holds {len(old)} shards; pass overwrite=true to replace them"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        self._staging: Path | None = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.folder))
        self.shard_size = shard_size
        self.num_samples = 0
        self.seconds = 0.0
        self._writer: wds.ShardWriter | None = None

    def write(self, key: str, flac: bytes, record: Mapping[str, Any]) -> None:
        """Add one sample; ``key`` may hold letters, digits, "_" and "-" only (webdataset splits at dots)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"sample key {key!r} may only contain letters, digits, '_' and '-'")
        if self._staging is None:
            raise ValueError(f"the writer of {self.folder} is closed")
        if self._writer is None:
            pattern = str(self._staging / SHARD_PATTERN)
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
        """Finish: move the complete new shards into the split folder (each rename replaces an old shard
        of the same name at once), then delete the old shards beyond them."""
        if self._staging is None:
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        new = split_shards(self._staging)
        for path in new:
            os.replace(path, self.folder / path.name)
        names = {path.name for path in new}
        for path in split_shards(self.folder):
            if path.name not in names:
                path.unlink()
        self.abort()

    def abort(self) -> None:
        """Discard the shards written so far; the split folder keeps what it held before."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def split_shards(folder: Path) -> list[Path]:
    """The shards of a split folder, sorted."""
    return sorted(folder.glob("shard-*.tar"))


@dataclass
class ConversionSummary:
    """What a conversion wrote and skipped.

    Attributes:
        written: samples written.
        skipped: entries skipped (missing, unusable audio, malformed or duplicate).
        hours: audio written.
        shards: shard files written.
        adjusted: samples written with changed audio (scaled down from above full scale, one channel
            kept of cancelling channels: ``seed_asr.data.audio.read_audio``).
        skipped_items: "name: reason" of each skipped entry.
        adjusted_items: "name: change" of each adjusted sample.
    """

    written: int = 0
    skipped: int = 0
    hours: float = 0.0
    shards: int = 0
    adjusted: int = 0
    skipped_items: list[str] = field(default_factory=list)
    adjusted_items: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        log.warning("skipping %s: %s", name, reason)
        self.skipped += 1
        self.skipped_items.append(f"{name}: {reason}")

    def adjust(self, name: str, notes: Sequence[str]) -> None:
        log.warning("audio %s: %s", name, "; ".join(notes))
        self.adjusted += 1
        self.adjusted_items.append(f"{name}: {'; '.join(notes)}")


@dataclass(frozen=True)
class _Entry:
    """One utterance to convert: its key, audio file, record fields other than the duration, where it was
    listed (``name``) and what identifies the utterance (``uid``: listed twice, it is written once)."""

    key: str
    audio: Path
    fields: dict[str, Any]
    name: str
    uid: str


def _write_entries(
    entries: Iterable[_Entry | tuple[str, str]],
    out_dir: str | Path,
    split: str,
    shard_size: int,
    num_workers: int | None,
    overwrite: bool,
) -> ConversionSummary:
    """Encode ``entries`` in parallel and write them; (name, reason) tuples among them are skips, and so
    are entries whose ``uid`` an earlier entry had (the first is kept)."""
    summary = ConversionSummary()
    valid: list[_Entry] = []
    first: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, _Entry):
            summary.skip(*entry)
        elif entry.uid in first:
            summary.skip(entry.name, f"duplicate of {first[entry.uid]} ({entry.uid}); the first is kept")
        else:
            first[entry.uid] = entry.name
            valid.append(entry)
    with SplitWriter(out_dir, split, shard_size, overwrite) as writer:
        results = ordered_map(transcode_to_flac, [entry.audio for entry in valid], num_workers)
        for entry, result in zip(valid, results, strict=True):
            if isinstance(result, str):
                summary.skip(str(entry.audio), result)
                continue
            flac, num_samples, notes = result
            if notes:
                summary.adjust(str(entry.audio), notes)
            writer.write(entry.key, flac, make_record(duration=num_samples / SAMPLE_RATE, **entry.fields))
        summary.written, summary.shards = writer.num_samples, writer.num_shards
        summary.hours = writer.seconds / 3600
    log.info("wrote %d samples (%.2f h) in %d shards to %s, skipped %d, adjusted the audio of %d",
             summary.written, summary.hours, summary.shards, writer.folder, summary.skipped, summary.adjusted)
    return summary


def _text_lines(path: Path) -> Iterator[tuple[str, str | None]]:
    """("<path>:<line number>", text) of each line of a UTF-8 text file; text is None for a line that is
    not valid UTF-8 (the other lines are still read)."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                yield f"{path}:{number}", raw.decode("utf-8")
            except UnicodeDecodeError:
                yield f"{path}:{number}", None


def _manifest_entries(manifest: Path, lang: str, domain: str) -> Iterator[_Entry | tuple[str, str]]:
    for number, (name, line) in enumerate(_text_lines(manifest), start=1):
        if line is None:
            yield name, "malformed manifest line (not UTF-8 text)"
            continue
        if not line.strip():
            continue
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
        yield _Entry(key, audio, fields, name, str(audio.resolve()))


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
    measured from the decoded audio. Missing or unusable audio (``seed_asr.data.audio.read_audio``),
    malformed lines (also lines that are not UTF-8) and lines repeating an earlier line's audio file (the
    first is kept) are logged by name, counted and skipped.
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
        for name, line in _text_lines(transcript):
            if line is None:
                yield name, "malformed transcript line (not UTF-8 text)"
                continue
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            parts = utt.split("-")
            if not text.strip() or len(parts) != 3 or not _KEY.fullmatch(utt):
                yield name, "malformed transcript line"
                continue
            speaker, chapter, _ = parts
            fields = {"text": text.strip(), "lang": lang, "domain": domain, "speaker": speaker,
                      "dialogue": f"{speaker}-{chapter}"}
            yield _Entry(utt, transcript.parent / f"{utt}.flac", fields, name, utt)


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
    Missing or unusable audio, malformed lines and repeated utterance ids (the first is kept) are logged
    by name, counted and skipped.
    """
    entries = _librispeech_entries(Path(root), lang, domain)
    return _write_entries(entries, out_dir, split, shard_size, num_workers, overwrite)
