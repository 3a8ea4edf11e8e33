"""Reading the JSON records of shards without decoding audio (tokenizer training, LM text, stats)."""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

from seed_asr.data.pipeline import expand_shards, record_problem

log = logging.getLogger(__name__)


def iter_records(patterns: str | Sequence[str]) -> Iterator[dict]:
    """Yield each sample's JSON record (with ``__key__`` added) from tar shards, in shard order.

    A record that is not UTF-8 JSON or that `record_problem` refuses is logged by shard and key and left
    out (its duration is not checked: the audio is not read).
    """
    for path in expand_shards(patterns):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    key = member.name[: -len(".json")]
                    try:
                        record: Any = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                    except ValueError as err:  # also not UTF-8
                        log.warning("skipping the record of %s:%s: unreadable json: %s", path, key, err)
                        continue
                    problem = record_problem(record, None)
                    if problem:
                        log.warning("skipping the record of %s:%s: %s", path, key, problem)
                        continue
                    record["__key__"] = key
                    yield record
