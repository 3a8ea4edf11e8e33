"""Exact-once evaluation reading: an index of tar members, a batch plan shared by all ranks, and an
iterable dataset that reads a rank's batches by member offset.

How ranks share an evaluation set: every rank indexes all shards (tar headers and the small JSON
members only), sorts all samples by duration, packs them into batches (:func:`pack_by_length`), splits
batches until their number divides the world size, and takes batches ``rank, rank + W, ...``. So each
sample is read exactly once overall, and every rank runs the same number of batches (no DDP hang).
DataLoader workers then take every n-th batch of their rank.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import soundfile as sf
from torch.utils.data import IterableDataset

from seed_asr.data.pipeline import (
    AUDIO_EXTENSIONS,
    Collator,
    DurationFilter,
    Item,
    Skipped,
    decode_sample,
    pack_by_length,
    skip_sample,
    worker_position,
)


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's members lie in a shard: ``members`` maps extension -> (offset, size)."""

    shard: str
    key: str
    members: dict[str, tuple[int, int]]
    duration: float


def _split_name(name: str) -> tuple[str, str]:
    """webdataset naming: the key is everything before the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def index_shard(shard: str) -> list[SampleRef]:
    """List a shard's samples with member offsets and durations (JSON ``duration``, else the audio header).

    Samples whose duration cannot be read get duration 0 (they are reported when read).

    Raises:
        ValueError: the file is not a readable tar archive (names the shard).
    """
    grouped: dict[str, dict[str, tuple[int, int]]] = {}
    durations: dict[str, float] = {}
    try:
        with tarfile.open(shard, mode="r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                grouped.setdefault(key, {})[ext] = (member.offset_data, member.size)
                if ext == "json":
                    durations[key] = _json_duration(archive.extractfile(member))
                elif ext in AUDIO_EXTENSIONS and key not in durations:
                    durations[key] = _header_duration(archive.extractfile(member))
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"cannot index shard {shard}: {err}") from err
    return [SampleRef(shard, key, members, durations.get(key, 0.0)) for key, members in grouped.items()]


def _json_duration(handle: IO[bytes] | None) -> float:
    try:
        value = json.loads(handle.read())["duration"]  # type: ignore[union-attr]
        return float(value) if math.isfinite(float(value)) else 0.0
    except Exception:  # a bad record is reported when the sample is read
        return 0.0


def _header_duration(handle: IO[bytes] | None) -> float:
    try:
        info = sf.info(handle)
        return info.frames / info.samplerate
    except Exception:  # an unreadable file is reported when the sample is read
        return 0.0


def plan_eval_batches(
    durations: list[float], max_batch_seconds: float, max_batch_size: int | None, world_size: int
) -> list[list[list[int]]]:
    """Exact-once batches for every rank, the same count on each.

    Args:
        durations: seconds of each sample.
        max_batch_seconds: padded-duration budget per batch.
        max_batch_size: optional cap on samples per batch.
        world_size: ranks.

    Returns:
        ``plan[rank]`` is a list of batches of sample indices; all ranks hold the same number of batches.

    Raises:
        ValueError: fewer samples than ranks (some rank would get no batch).
    """
    if len(durations) < world_size:
        raise ValueError(f"evaluation set has {len(durations)} samples, fewer than the {world_size} ranks")
    order = sorted(range(len(durations)), key=durations.__getitem__)
    lengths = [max(1, round(durations[i] * 1000)) for i in order]  # ms: only the order of sizes matters
    batches = [
        [order[i] for i in batch]
        for batch in pack_by_length(lengths, round(max_batch_seconds * 1000), max_batch_size)
    ]
    while len(batches) % world_size:
        largest = max(range(len(batches)), key=lambda b: len(batches[b]))
        half = len(batches[largest]) // 2
        if half:
            batches[largest : largest + 1] = [batches[largest][:half], batches[largest][half:]]
        else:  # all singletons: merge the two shortest (over budget, but rare and exact-once)
            batches[0:2] = [batches[0] + batches[1]]
    return [batches[rank::world_size] for rank in range(world_size)]


class EvalBatches(IterableDataset):
    """One rank's evaluation batches, read by member offset; DataLoader workers take every n-th batch.

    Args:
        refs: all indexed samples.
        batches: this rank's batches of indices into ``refs`` (from :func:`plan_eval_batches`).
        limits: duration filter applied after decoding.
        collator: builds the batch dicts.
    """

    def __init__(
        self, refs: list[SampleRef], batches: list[list[int]], limits: DurationFilter, collator: Collator
    ) -> None:
        self.refs, self.batches, self.limits, self.collator = refs, batches, limits, collator

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers, _ = worker_position()
        with ExitStack() as stack:
            files: dict[str, IO[bytes]] = {}

            def shard_file(path: str) -> IO[bytes]:
                if path not in files:
                    files[path] = stack.enter_context(Path(path).open("rb"))
                return files[path]

            for batch in self.batches[worker::num_workers]:
                yield self.collator.collate_items([self._item(self.refs[i], shard_file) for i in batch])

    def _item(self, ref: SampleRef, shard_file: Callable[[str], IO[bytes]]) -> Item:
        try:
            handle, raw = shard_file(ref.shard), {}
            for ext, (offset, size) in ref.members.items():
                handle.seek(offset)
                raw[ext] = handle.read(size)
        except OSError as err:
            return skip_sample(ref.key, "undecodable", f"cannot read from {ref.shard}: {err}")
        item = decode_sample({"__key__": ref.key, **raw})
        return item if isinstance(item, Skipped) else self.limits.check(item)
