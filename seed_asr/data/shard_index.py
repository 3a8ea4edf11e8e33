"""Exact-once evaluation reading: an index of tar members, a batch plan shared by all ranks, and an
iterable dataset that reads a rank's batches by member offset.

How ranks share an evaluation set: every rank indexes all shards (decoding each sample's audio and
record with the reader's own checks), leaves out the samples that cannot be used (a bad record,
undecodable, empty or non-finite audio, a key seen before, or outside the `SampleLimits`, the rule the
reader applies), sorts the rest by duration, packs them into batches (:func:`pack_by_length`), splits
batches until their number divides the world size, and takes batches ``rank, rank + W, ...``. So each
sample is read exactly once overall, every rank runs the same number of batches (no DDP hang), and no
batch comes out empty: the index and the reader judge the same bytes by the same code. DataLoader
workers then take every n-th batch of their rank. The samples left out are named, and counted in the
batches' ``stats``. (Decoding FLAC costs ~1.5 s per hour of audio on one core.)
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from torch.utils.data import IterableDataset

from seed_asr.data.audio import AudioError, audio_seconds
from seed_asr.data.pipeline import (
    AUDIO_EXTENSIONS,
    Collator,
    Item,
    SampleLimits,
    Skipped,
    decode_sample,
    pack_by_length,
    record_problem,
    skip_sample,
    worker_position,
)


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's members lie in a shard (``members`` maps extension -> (offset, size)), the
    duration of its decoded audio and its transcript."""

    shard: str
    key: str
    members: dict[str, tuple[int, int]]
    duration: float
    text: str


def _split_name(name: str) -> tuple[str, str]:
    """webdataset naming: the key is everything before the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def index_shard(shard: str) -> tuple[list[SampleRef], list[Skipped]]:
    """List a shard's usable samples, checked as the reader checks them.

    A sample's audio is decoded (``seed_asr.data.audio.audio_seconds``: the reader's decoding and checks)
    for its duration; its record must pass :func:`seed_asr.data.pipeline.record_problem` against it.

    Returns:
        The usable samples, and markers naming the others (and a truncated shard's lost remainder).

    Raises:
        ValueError: the file is not a readable tar archive (names the shard).
    """
    members: dict[str, dict[str, tuple[int, int]]] = {}
    records: dict[str, bytes] = {}
    seconds: dict[tuple[str, str], float | AudioError] = {}
    size = Path(shard).stat().st_size
    skipped: list[Skipped] = []
    try:
        with tarfile.open(shard, mode="r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                members.setdefault(key, {})[ext] = (member.offset_data, member.size)
                if member.offset_data + member.size > size:
                    continue  # cut off: reported below
                if ext == "json":
                    records[key] = archive.extractfile(member).read()  # type: ignore[union-attr]
                elif ext in AUDIO_EXTENSIONS and member.size:
                    data = archive.extractfile(member).read()  # type: ignore[union-attr]
                    seconds[key, ext] = _probe(data, f"{shard}:{key}")
    except (tarfile.TarError, OSError) as err:
        if not members:
            raise ValueError(f"cannot index shard {shard}: {err}") from err
        why = f"shard unreadable after {len(members)} samples: {err}"
        skipped.append(skip_sample(shard, "undecodable", why))
    refs = []
    for key, found in members.items():
        item = _check(shard, key, found, records.get(key), seconds, size)
        (refs if isinstance(item, SampleRef) else skipped).append(item)
    return refs, skipped


def _probe(data: bytes, name: str) -> float | AudioError:
    try:
        return audio_seconds(data, name=name)
    except AudioError as err:
        return err


def _check(
    shard: str,
    key: str,
    members: dict[str, tuple[int, int]],
    record: bytes | None,
    seconds: dict[tuple[str, str], float | AudioError],
    size: int,
) -> SampleRef | Skipped:
    """One indexed sample, or the marker of what the reader would find wrong with it (checked in the
    reader's order: `seed_asr.data.pipeline.decode_sample`)."""
    name = f"{shard}:{key}"
    audio_ext = next((ext for ext in AUDIO_EXTENSIONS if ext in members), None)
    if audio_ext is None or "json" not in members:
        return skip_sample(key, "undecodable", f"{name} needs audio and json, has {sorted(members)}")
    if any(offset + length > size for offset, length in members.values()):
        return skip_sample(key, "undecodable", f"{name} is cut off by the end of the shard (truncated)")
    try:
        meta: Any = json.loads(record or b"")
    except ValueError as err:  # also not UTF-8
        return skip_sample(key, "bad_record", f"{name}: unreadable json record: {err}")
    if members[audio_ext][1] == 0:
        return skip_sample(key, "empty", f"{name}: audio file has no bytes")
    duration = seconds[key, audio_ext]
    if isinstance(duration, AudioError):
        return skip_sample(key, duration.reason, str(duration))
    problem = record_problem(meta, duration)
    if problem:
        return skip_sample(key, "bad_record", f"{name}: {problem}")
    return SampleRef(shard, key, members, duration, meta["text"])


def index_eval_set(shards: Sequence[str], limits: SampleLimits) -> tuple[list[SampleRef], list[Skipped]]:
    """Index ``shards`` (:func:`index_shard`) and leave out keys seen in an earlier sample and samples
    outside ``limits``.

    Returns:
        The samples to read, and markers naming those left out.
    """
    refs: list[SampleRef] = []
    skipped: list[Skipped] = []
    first: dict[str, str] = {}
    for shard in shards:
        found, bad = index_shard(shard)
        skipped += bad
        for ref in found:
            problem = limits.problem(ref.duration, ref.text)
            if ref.key in first:
                problem = ("duplicate", f"{ref.shard}: key already read from {first[ref.key]}, first kept")
            if problem:
                skipped.append(skip_sample(ref.key, *problem))
                continue
            first[ref.key] = ref.shard
            refs.append(ref)
    return refs, skipped


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
        raise ValueError(
            f"evaluation set has {len(durations)} usable samples, fewer than the {world_size} ranks"
        )
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
        limits: the limits the plan applied, checked again on the decoded audio.
        collator: builds the batch dicts.
        skipped: this rank's share of the samples left out of the plan; each worker's first batch counts
            its share in ``stats`` and names it in ``skipped``.
    """

    def __init__(
        self,
        refs: list[SampleRef],
        batches: list[list[int]],
        limits: SampleLimits,
        collator: Collator,
        skipped: Sequence[Skipped] = (),
    ) -> None:
        self.refs, self.batches, self.limits, self.collator = refs, batches, limits, collator
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers, _ = worker_position()
        readers = min(num_workers, len(self.batches))  # the workers that have batches
        carried: list[Item] = list(self.skipped[worker::readers]) if worker < readers else []
        with ExitStack() as stack:
            files: dict[str, IO[bytes]] = {}

            def shard_file(path: str) -> IO[bytes]:
                if path not in files:
                    files[path] = stack.enter_context(Path(path).open("rb"))
                return files[path]

            for batch in self.batches[worker::num_workers]:
                items = [self._item(self.refs[i], shard_file) for i in batch]
                yield self.collator.collate_items([*carried, *items])
                carried = []

    def _item(self, ref: SampleRef, shard_file: Callable[[str], IO[bytes]]) -> Item:
        try:
            handle, raw = shard_file(ref.shard), {}
            for ext, (offset, size) in ref.members.items():
                handle.seek(offset)
                raw[ext] = handle.read(size)
        except OSError as err:
            return skip_sample(ref.key, "undecodable", f"cannot read from {ref.shard}: {err}")
        return self.limits.check(decode_sample({"__key__": ref.key, **raw}))
