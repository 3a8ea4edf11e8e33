"""Reading the JSON records of shards without decoding audio (tokenizer training, LM text, stats)."""

from __future__ import annotations

import glob
import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import braceexpand


def expand_shards(patterns: str | Sequence[str]) -> list[str]:
    """Expand brace patterns and globs into a sorted list of existing shard paths.

    Raises:
        FileNotFoundError: a pattern matches no file (the pattern is named).
    """
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    out: list[str] = []
    for pattern in items:
        for expanded in braceexpand.braceexpand(str(pattern)):
            matches = sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[") else [expanded]
            found = [m for m in matches if Path(m).is_file()]
            if not found:
                raise FileNotFoundError(f"shard pattern {expanded!r} matches no file")
            out.extend(found)
    return out


def iter_records(patterns: str | Sequence[str]) -> Iterator[dict]:
    """Yield each sample's JSON record (with ``__key__`` added) from tar shards, in shard order."""
    for path in expand_shards(patterns):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    record = json.load(tar.extractfile(member))
                    record["__key__"] = member.name[: -len(".json")]
                    yield record
