"""Reading the JSON records of shards without decoding audio (tokenizer training, LM text, stats)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Sequence

from seed_asr.data.pipeline import expand_shards


def iter_records(patterns: str | Sequence[str]) -> Iterator[dict]:
    """Yield each sample's JSON record (with ``__key__`` added) from tar shards, in shard order."""
    for path in expand_shards(patterns):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    record = json.load(tar.extractfile(member))
                    record["__key__"] = member.name[: -len(".json")]
                    yield record
