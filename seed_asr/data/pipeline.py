"""Streaming training pipeline over webdataset shards: shard assignment, decoding, augmentation,
length filtering, length-bucketed dynamic batching and collation to the batch contract.

Skipped samples travel down the stream as :class:`Skipped` markers; the batcher tallies them into the
next batch's ``stats`` so every count reaches the loggers (see ``seed_asr.callbacks.data_stats``).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from torch.utils.data import get_worker_info

from seed_asr.data.audio import SAMPLE_RATE, AudioError, decode_audio, resample

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("flac", "wav", "ogg")
SKIP_REASONS = ("undecodable", "empty", "too_short", "too_long")


class Tokenizer(Protocol):
    """Anything with ``encode(text) -> list[int]``."""

    def encode(self, text: str) -> list[int]: ...


@dataclass
class Utterance:
    """One decoded sample: ``audio`` is (S,) float32 at 16 kHz, ``meta`` the sample's JSON record."""

    key: str
    audio: np.ndarray
    meta: dict[str, Any]


@dataclass(frozen=True)
class Skipped:
    """Marker left in the stream where a sample was dropped; ``reason`` is one of ``SKIP_REASONS``."""

    key: str
    reason: str


Item = Utterance | Skipped


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Expand shard specifications into a sorted list of existing local files.

    Args:
        spec: a path, glob (``data/*.tar``) or brace pattern (``shard-{000000..000009}.tar``), several
            joined by ``::``, or a list of such strings.

    Returns:
        Sorted, de-duplicated shard paths.

    Raises:
        FileNotFoundError: a pattern matches nothing, naming the pattern.
    """
    patterns = [spec] if isinstance(spec, str) else list(spec)
    shards: set[str] = set()
    for pattern in patterns:
        for url in wds.shardlists.expand_urls(str(pattern)):
            found = glob.glob(url) if glob.has_magic(url) else [url] if Path(url).is_file() else []
            if not found:
                raise FileNotFoundError(f"no shard matches {url!r} (from {pattern!r})")
            shards.update(found)
    return sorted(shards)


def assign_shards(
    shards: Sequence[str], rank: int, world_size: int, worker: int, num_workers: int
) -> list[str]:
    """Explicit node and worker split: the shards one DataLoader worker of one rank reads.

    Global worker ``g = rank * num_workers + worker`` of ``n = world_size * num_workers`` takes
    ``shards[g::n]``: disjoint and complete when there are at least ``n`` shards. With fewer shards each
    worker takes ``shards[g % len(shards)]`` (shards are then shared; used only for resampled training).
    """
    if not 0 <= rank < world_size or not 0 <= worker < num_workers:
        raise ValueError(f"bad split: rank {rank} of {world_size}, worker {worker} of {num_workers}")
    total, index = world_size * num_workers, rank * num_workers + worker
    return list(shards[index::total]) if len(shards) >= total else [shards[index % len(shards)]]


def worker_position() -> tuple[int, int, int]:
    """(worker id, number of workers, torch's per-worker seed or 0) in the current DataLoader process."""
    info = get_worker_info()
    return (0, 1, 0) if info is None else (info.id, info.num_workers, info.seed)


class StreamSeeds:
    """Seeds for one stage of one worker: distinct per rank, worker and pass over the stream.

    Holds the pass counter (in each worker's copy, so persistent workers reshuffle every epoch; fresh
    workers get a fresh ``torch`` worker seed every epoch instead).
    """

    def __init__(self, seed: int, rank: int) -> None:
        self.seed, self.rank, self.passes = seed, rank, 0

    def next(self) -> np.random.SeedSequence:
        """Seed material for the next pass."""
        worker, _, worker_seed = worker_position()
        self.passes += 1
        return np.random.SeedSequence([self.seed, self.rank, worker, worker_seed % 2**32, self.passes])

    def python_rng(self) -> random.Random:
        """A ``random.Random`` for the next pass."""
        return random.Random(int(self.next().generate_state(1)[0]))

    def numpy_rng(self) -> np.random.Generator:
        """A numpy generator for the next pass."""
        return np.random.default_rng(self.next())


class CycledShards:
    """Endless training shard source: this worker's shards (:func:`assign_shards`), reshuffled each cycle.

    Every worker streams forever, so ``with_epoch`` gives every rank the same number of batches.
    """

    def __init__(self, shards: Sequence[str], rank: int, world_size: int, seed: int) -> None:
        if not shards:
            raise ValueError("CycledShards needs at least one shard")
        self.shards, self.rank, self.world_size = list(shards), rank, world_size
        self.seeds = StreamSeeds(seed, rank)

    def __call__(self) -> Iterator[dict[str, str]]:
        worker, num_workers, _ = worker_position()
        mine = assign_shards(self.shards, self.rank, self.world_size, worker, num_workers)
        rng = self.seeds.python_rng()
        while True:
            rng.shuffle(mine)
            yield from ({"url": url} for url in mine)


def log_and_continue(err: Exception) -> bool:
    """webdataset handler: log a shard-level read error and go on with the next shard."""
    log.warning("skipping unreadable shard data: %r", err)
    return True


def skip_sample(key: str, reason: str, why: str) -> Skipped:
    """Log why sample ``key`` is dropped and return its marker."""
    log.warning("skipping sample %s (%s): %s", key, reason, why)
    return Skipped(key, reason)


def decode_sample(sample: dict[str, Any]) -> Item:
    """Turn one raw webdataset sample (``__key__``, audio bytes, ``json`` bytes) into an :class:`Utterance`.

    Stereo is down-mixed and any rate resampled to 16 kHz; problems give a :class:`Skipped` marker.
    """
    key = str(sample.get("__key__", "<no key>"))
    audio_ext = next((ext for ext in AUDIO_EXTENSIONS if ext in sample), None)
    if audio_ext is None or "json" not in sample:
        return skip_sample(
            key, "undecodable", f"needs audio ({'/'.join(AUDIO_EXTENSIONS)}) and json, has {sorted(sample)}"
        )
    try:
        meta = json.loads(sample["json"])
        text = meta["text"]
    except (ValueError, TypeError, KeyError) as err:
        return skip_sample(key, "undecodable", f"bad json record: {err!r}")
    if not isinstance(text, str):
        return skip_sample(key, "undecodable", "json 'text' is not a string")
    data = sample[audio_ext]
    if len(data) == 0:
        return skip_sample(key, "empty", "audio file has no bytes")
    try:
        wave = decode_audio(data, SAMPLE_RATE, name=key)
    except AudioError as err:
        if _has_zero_frames(data):
            return skip_sample(key, "empty", "audio has no samples")
        return skip_sample(key, "undecodable", str(err))
    return Utterance(key, wave, meta)


def _has_zero_frames(data: bytes) -> bool:
    try:
        return sf.info(io.BytesIO(data)).frames == 0
    except Exception:  # soundfile raises several types for bad input
        return False


def decode_samples(src: Iterable[dict[str, Any]]) -> Iterator[Item]:
    """Pipeline stage: :func:`decode_sample` over a stream."""
    return map(decode_sample, src)


class Augmenter:
    """Pipeline stage: speed perturbation (resampling) and additive noise at a random SNR.

    Args:
        speed_factors: factors drawn uniformly per utterance; ``f`` shortens audio by ``1 / f``.
        noise_prob: probability of adding noise to an utterance.
        noise_snr_db: (low, high) SNR range in dB.
        noise_files: noise recordings (any rate, decoded once per worker); white noise when empty.
        seed: base seed.
        rank: this process's rank (so ranks draw differently).
    """

    def __init__(
        self,
        speed_factors: Sequence[float] = (1.0,),
        noise_prob: float = 0.0,
        noise_snr_db: tuple[float, float] = (10.0, 30.0),
        noise_files: Sequence[str] = (),
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if not speed_factors or min(speed_factors) <= 0:
            raise ValueError(f"speed_factors must be positive numbers, got {list(speed_factors)}")
        if not 0 <= noise_prob <= 1 or noise_snr_db[0] > noise_snr_db[1]:
            raise ValueError(
                f"need noise_prob in [0, 1] and low <= high SNR, got {noise_prob}, {noise_snr_db}"
            )
        self.speed_factors, self.noise_prob = [float(f) for f in speed_factors], noise_prob
        self.noise_snr_db, self.noise_files = (
            (float(noise_snr_db[0]), float(noise_snr_db[1])),
            list(noise_files),
        )
        self.seeds = StreamSeeds(seed, rank)
        self._noises: list[np.ndarray] | None = None

    @property
    def active(self) -> bool:
        """Whether the stage changes anything."""
        return self.noise_prob > 0 or any(f != 1.0 for f in self.speed_factors)

    def _noise(self, rng: np.random.Generator, length: int) -> np.ndarray:
        if self._noises is None:
            self._noises = [decode_audio(Path(path), SAMPLE_RATE) for path in self.noise_files]
        if not self._noises:
            return rng.standard_normal(length).astype(np.float32)
        noise = self._noises[rng.integers(len(self._noises))]
        if noise.shape[0] < length:
            noise = np.tile(noise, -(-length // noise.shape[0]))
        start = rng.integers(noise.shape[0] - length + 1)
        return noise[start : start + length]

    def augment(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Perturb one (S,) waveform; returns (S',) float32."""
        factor = self.speed_factors[rng.integers(len(self.speed_factors))]
        if factor != 1.0:
            wave = resample(wave, round(SAMPLE_RATE * factor), SAMPLE_RATE)
        if self.noise_prob and rng.random() < self.noise_prob and wave.size:
            noise = self._noise(rng, wave.shape[0])
            snr_db = rng.uniform(*self.noise_snr_db)
            signal_power, noise_power = float(np.mean(wave**2)), float(np.mean(noise**2)) + 1e-12
            wave = wave + noise * np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
        return wave.astype(np.float32, copy=False)

    def __call__(self, src: Iterable[Item]) -> Iterator[Item]:
        rng = self.seeds.numpy_rng()
        for item in src:
            if isinstance(item, Utterance):
                item = Utterance(item.key, self.augment(item.audio, rng), item.meta)
            yield item


@dataclass(frozen=True)
class DurationFilter:
    """Pipeline stage replacing utterances outside [min_seconds, max_seconds] by :class:`Skipped` markers."""

    min_seconds: float = 0.1
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"need 0 <= min_duration <= max_duration, got {self.min_seconds}, {self.max_seconds}"
            )

    def check(self, item: Item) -> Item:
        if isinstance(item, Skipped):
            return item
        seconds = item.audio.shape[0] / SAMPLE_RATE
        if seconds < self.min_seconds:
            return skip_sample(item.key, "too_short", f"{seconds:.3f} s < min_duration {self.min_seconds} s")
        if seconds > self.max_seconds:
            return skip_sample(item.key, "too_long", f"{seconds:.3f} s > max_duration {self.max_seconds} s")
        return item

    def __call__(self, src: Iterable[Item]) -> Iterator[Item]:
        return map(self.check, src)


def plain_waves(specs: Sequence[str], limits: DurationFilter) -> Iterator[np.ndarray]:
    """(S,) waveforms of the shards in order, decoded and duration-filtered, without augmentation."""
    shards = [shard for spec in specs for shard in expand_shards(spec)]
    stream = wds.DataPipeline(
        wds.SimpleShardList(shards),
        wds.tarfile_to_samples(handler=log_and_continue),
        decode_samples,
        limits,
    )
    return (item.audio for item in stream if isinstance(item, Utterance))


def pack_by_length(
    lengths: Sequence[int], max_total: int, max_batch_size: int | None = None
) -> list[list[int]]:
    """Greedy batches over ``lengths`` in the given order, each within a padded-size budget.

    A batch of n items whose longest has L samples costs ``n * L`` (what the padded tensor holds); a
    batch is closed when adding the next item would exceed ``max_total`` or ``max_batch_size``. An item
    longer than ``max_total`` gets a batch of its own.

    Returns:
        Lists of indices into ``lengths``.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index, length in enumerate(lengths):
        grown = max(longest, length)
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or grown * (len(current) + 1) > max_total):
            batches.append(current)
            current, grown = [], length
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches


class DynamicBatcher:
    """Pipeline stage: dynamic batches by padded audio duration, with length bucketing.

    With ``bucket_buffer > 0`` it fills a buffer of that many utterances, sorts it by length, cuts it
    into batches with :func:`pack_by_length`, yields them in random order and keeps the last (partial)
    batch's utterances for the next fill. With ``bucket_buffer == 0`` batches follow arrival order.
    Yields ``(utterances, skip counts since the previous batch)``.

    Args:
        max_batch_seconds: budget of padded audio per batch (batch size x longest duration).
        max_batch_size: optional cap on utterances per batch.
        bucket_buffer: utterances sorted together (0 disables bucketing).
        seed: base seed for the batch order.
        rank: this process's rank.
    """

    def __init__(
        self,
        max_batch_seconds: float,
        max_batch_size: int | None = None,
        bucket_buffer: int = 500,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if max_batch_seconds <= 0 or (max_batch_size is not None and max_batch_size < 1) or bucket_buffer < 0:
            raise ValueError("need max_batch_seconds > 0, max_batch_size >= 1 (or None), bucket_buffer >= 0")
        self.max_samples = int(max_batch_seconds * SAMPLE_RATE)
        self.max_batch_size, self.bucket_buffer = max_batch_size, bucket_buffer
        self.seeds = StreamSeeds(seed, rank)

    def _pack(self, items: list[Utterance]) -> list[list[Utterance]]:
        batches = pack_by_length([u.audio.shape[0] for u in items], self.max_samples, self.max_batch_size)
        return [[items[i] for i in batch] for batch in batches]

    def __call__(self, src: Iterable[Item]) -> Iterator[tuple[list[Utterance], Counter[str]]]:
        rng = self.seeds.python_rng()
        skipped: Counter[str] = Counter()
        buffer: list[Utterance] = []
        capacity = max(self.bucket_buffer, 1)
        for item in src:
            if isinstance(item, Skipped):
                skipped[item.reason] += 1
                continue
            buffer.append(item)
            if len(buffer) < capacity:
                continue
            if self.bucket_buffer:
                buffer.sort(key=lambda u: u.audio.shape[0])
            batches = self._pack(buffer)
            buffer = batches.pop()
            rng.shuffle(batches)
            for batch in batches:
                yield batch, skipped
                skipped = Counter()
        if self.bucket_buffer:
            buffer.sort(key=lambda u: u.audio.shape[0])
        for batch in self._pack(buffer):
            yield batch, skipped
            skipped = Counter()


def context_text(meta: dict[str, Any]) -> str:
    """The sample's context as one string: dialogue history, then the keyword list (may be empty)."""
    context = meta.get("context") or {}
    parts = [str(context.get("history") or "").strip(), ", ".join(map(str, context.get("keywords") or []))]
    return "\n".join(part for part in parts if part)


class Collator:
    """Builds the batch contract from utterances (see docs/interfaces.md).

    Args:
        tokenizer: optional; when given, batches carry ``text_ids`` and ``context_ids``.
    """

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer

    def __call__(
        self, utterances: Sequence[Utterance], skipped: Counter[str] | None = None
    ) -> dict[str, Any]:
        """Collate.

        Returns:
            ``audio`` (B, S) float32 zero padded, ``audio_lens`` (B,) int64, ``keys``, ``texts``, ``metas``,
            ``stats`` (skip counts since the previous batch, padding fraction, audio seconds) and, with a
            tokenizer, ``text_ids`` / ``context_ids`` (lists of (L,) int64).
        """
        lens = torch.tensor([u.audio.shape[0] for u in utterances], dtype=torch.int64)
        longest = int(lens.max()) if len(utterances) else 0
        audio = torch.zeros(len(utterances), longest, dtype=torch.float32)
        for row, utterance in enumerate(utterances):
            audio[row, : utterance.audio.shape[0]] = torch.from_numpy(utterance.audio)
        counts = skipped or Counter()
        stats = {f"skipped_{reason}": float(counts[reason]) for reason in SKIP_REASONS}
        stats["padding_fraction"] = 1.0 - float(lens.sum()) / audio.numel() if audio.numel() else 0.0
        stats["audio_seconds"] = float(lens.sum()) / SAMPLE_RATE
        batch: dict[str, Any] = {
            "audio": audio,
            "audio_lens": lens,
            "keys": [u.key for u in utterances],
            "texts": [u.meta["text"] for u in utterances],
            "metas": [u.meta for u in utterances],
            "stats": stats,
        }
        if self.tokenizer is not None:
            batch["text_ids"] = [self._ids(text) for text in batch["texts"]]
            batch["context_ids"] = [self._ids(context_text(meta)) for meta in batch["metas"]]
        return batch

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text), dtype=torch.int64)

    def collate_items(self, items: Sequence[Item]) -> dict[str, Any]:
        """``collate_fn`` for map-style loaders: items may include :class:`Skipped` markers."""
        skipped = Counter(item.reason for item in items if isinstance(item, Skipped))
        return self([item for item in items if isinstance(item, Utterance)], skipped)

    def stage(self, src: Iterable[tuple[list[Utterance], Counter[str]]]) -> Iterator[dict[str, Any]]:
        """Pipeline stage after :class:`DynamicBatcher`."""
        for utterances, skipped in src:
            yield self(utterances, skipped)
