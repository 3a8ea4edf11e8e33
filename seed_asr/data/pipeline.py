"""Streaming training pipeline over webdataset shards: shard assignment, decoding, augmentation,
filtering by duration and transcript length, length-bucketed dynamic batching and collation to the batch
contract.

Skipped samples travel down the stream as :class:`Skipped` markers; the batcher hands them to the next
batch, whose ``stats`` count them by reason and whose ``skipped`` names them, so every count reaches the
loggers (see ``seed_asr.callbacks.data_stats``).
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import get_worker_info

from seed_asr.data.audio import AUDIO_PROBLEMS, SAMPLE_RATE, AudioError, decode_audio, resample

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("flac", "wav", "ogg")
SKIP_REASONS = (*AUDIO_PROBLEMS, "bad_record", "duplicate", "too_short", "too_long", "too_many_tokens")
# a record's duration may differ from its audio's by this many seconds plus this fraction of it
DURATION_SLACK = (0.1, 0.05)


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
    """Marker left in the stream where a sample was dropped; ``reason`` is one of ``SKIP_REASONS``,
    ``detail`` says what was wrong (not compared)."""

    key: str
    reason: str
    detail: str = field(default="", compare=False)


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


class Epochs(torch.utils.data.IterableDataset):
    """Epochs of an endless stream: each ``iter()`` yields the next `per_worker` items of a fresh pass in
    every loader worker; ``len()`` is the epoch's items over all workers. A plain class, so that it
    pickles into workers started by a fork server or spawn.

    Args:
        stream: an iterable that never ends (e.g. a ``wds.DataPipeline`` over ``CycledShards``).
        per_worker: items per epoch in each worker.
        num_workers: the loader's workers (0 counts as 1: the loading process).
    """

    def __init__(self, stream: Iterable[Any], per_worker: int, num_workers: int) -> None:
        super().__init__()
        self.stream, self.per_worker, self.length = stream, per_worker, per_worker * max(1, num_workers)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.stream), self.per_worker)

    def __len__(self) -> int:
        return self.length


class CycledShards:
    """Endless training shard source: this worker's shards (:func:`assign_shards`), reshuffled each cycle.

    Every worker streams forever, so ``Epochs`` gives every rank the same number of batches.
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
    return Skipped(key, reason, why)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _context_problem(context: Any) -> str | None:
    if context is None:
        return None
    if not isinstance(context, dict):
        return f"record context must be an object, got {_short(context)}"
    history = context.get("history", "")
    if not isinstance(history, str) and not (
        isinstance(history, list) and all(isinstance(h, str) for h in history)
    ):
        return f"context history must be a string or a list of strings, got {_short(history)}"
    for name in ("keywords", "entities"):
        words = context.get(name, [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            return f"context {name} must be a list of strings, got {_short(words)}"
    if not isinstance(context.get("title", ""), str):
        return f"context title must be a string, got {_short(context['title'])}"
    return None


def record_problem(meta: Any, audio_seconds: float | None) -> str | None:
    """What makes a sample's JSON record unusable, or None.

    The text must be a string; ``lang``, ``domain``, ``speaker``, ``dialogue`` and ``phonemes`` strings
    when present; ``context`` an object of a history (string or list of strings), keyword and entity lists
    of strings and a string title, each optional; ``duration``, when present, a number within
    ``DURATION_SLACK`` of ``audio_seconds`` (what the audio holds; None: the audio is not read, the
    duration not checked). The readers and the evaluation index all apply this one check.
    """
    if not isinstance(meta, dict):
        return f"record must be a JSON object, got {_short(meta)}"
    if not isinstance(meta.get("text"), str):
        return f"record text must be a string, got {_short(meta.get('text'))}"
    for name in ("lang", "domain", "speaker", "dialogue", "phonemes"):
        if not isinstance(meta.get(name, ""), str):
            return f"record {name} must be a string, got {_short(meta[name])}"
    problem = _context_problem(meta.get("context"))
    if problem:
        return problem
    if "duration" in meta and audio_seconds is not None:
        duration, (fixed, fraction) = meta["duration"], DURATION_SLACK
        number = isinstance(duration, (int, float)) and not isinstance(duration, bool)
        if not number or not abs(duration - audio_seconds) <= fixed + fraction * audio_seconds:
            return f"record duration {_short(duration)} does not match the audio's {audio_seconds:.3f} s"
    return None


def decode_sample(sample: dict[str, Any]) -> Item:
    """Turn one raw webdataset sample (``__key__``, audio bytes, ``json`` bytes) into an :class:`Utterance`.

    Audio is read by ``seed_asr.data.audio.decode_audio`` (down-mixed, resampled to 16 kHz, non-finite
    audio refused); undecodable, empty or non-finite audio and bad records (:func:`record_problem`) give a
    :class:`Skipped` marker.
    """
    key = str(sample.get("__key__", "<no key>"))
    audio_ext = next((ext for ext in AUDIO_EXTENSIONS if ext in sample), None)
    if audio_ext is None or "json" not in sample:
        return skip_sample(
            key, "undecodable", f"needs audio ({'/'.join(AUDIO_EXTENSIONS)}) and json, has {sorted(sample)}"
        )
    try:
        meta = json.loads(sample["json"])
    except ValueError as err:  # also not UTF-8
        return skip_sample(key, "bad_record", f"unreadable json record: {err}")
    data = sample[audio_ext]
    if len(data) == 0:
        return skip_sample(key, "empty", "audio file has no bytes")
    try:
        wave = decode_audio(data, SAMPLE_RATE, name=key)
    except AudioError as err:
        return skip_sample(key, err.reason, str(err))
    problem = record_problem(meta, wave.shape[0] / SAMPLE_RATE)
    if problem:
        return skip_sample(key, "bad_record", problem)
    return Utterance(key, wave, meta)


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
class SampleLimits:
    """What an utterance must be to be used: its duration in [min_seconds, max_seconds], and its
    transcript at most ``max_tokens`` tokens and ``max_tokens_per_second`` tokens per second of audio
    (clips under 1 s are allowed a 1 s clip's share); None turns a transcript limit off.

    One rule (:meth:`problem`) for the training reader, the evaluation planner (on indexed durations and
    texts) and the evaluation reader. As a pipeline stage it replaces utterances outside the limits by
    :class:`Skipped` markers (``too_short``, ``too_long``, ``too_many_tokens``).

    Tokens are counted with ``tokenizer`` when there is one, else as UTF-8 bytes: no fewer than the
    tokens of byte-level BPE and of characters with byte fallback (the project's tokenizers).
    """

    min_seconds: float = 0.1
    max_seconds: float = 30.0
    max_tokens: int | None = None
    max_tokens_per_second: float | None = None
    tokenizer: Tokenizer | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"need 0 <= min_duration <= max_duration, got {self.min_seconds}, {self.max_seconds}"
            )
        if (self.max_tokens is not None and self.max_tokens < 1) or (
            self.max_tokens_per_second is not None and self.max_tokens_per_second <= 0
        ):
            raise ValueError(
                f"need max_text_tokens >= 1 and max_text_tokens_per_second > 0 (or null), "
                f"got {self.max_tokens}, {self.max_tokens_per_second}"
            )

    def num_tokens(self, text: str) -> int:
        """Tokens of ``text`` (UTF-8 bytes without a tokenizer)."""
        return len(self.tokenizer.encode(text)) if self.tokenizer else len(text.encode("utf-8"))

    def problem(self, seconds: float, text: str) -> tuple[str, str] | None:
        """(reason, detail) when an utterance of ``seconds`` with transcript ``text`` is out of limits."""
        if not seconds >= self.min_seconds:
            return "too_short", f"{seconds:.3f} s < min_duration {self.min_seconds} s"
        if not seconds <= self.max_seconds:
            return "too_long", f"{seconds:.3f} s > max_duration {self.max_seconds} s"
        return self.text_problem(text, seconds)

    def text_problem(self, text: str, seconds: float | None) -> tuple[str, str] | None:
        """("too_many_tokens", detail) when ``text`` is too long, alone or for ``seconds`` of audio (None:
        the token limit only)."""
        if self.max_tokens is None and (self.max_tokens_per_second is None or seconds is None):
            return None
        tokens = self.num_tokens(text)
        if self.max_tokens is not None and tokens > self.max_tokens:
            return "too_many_tokens", f"transcript of {tokens} tokens > max_text_tokens {self.max_tokens}"
        rate = self.max_tokens_per_second
        if rate is not None and seconds is not None and tokens > rate * max(seconds, 1.0):
            return "too_many_tokens", (
                f"transcript of {tokens} tokens in {seconds:.3f} s > max_text_tokens_per_second {rate}"
            )
        return None

    def check(self, item: Item) -> Item:
        """The utterance, or its :class:`Skipped` marker when out of limits."""
        if isinstance(item, Skipped):
            return item
        problem = self.problem(item.audio.shape[0] / SAMPLE_RATE, item.meta["text"])
        return skip_sample(item.key, *problem) if problem else item

    def __call__(self, src: Iterable[Item]) -> Iterator[Item]:
        return map(self.check, src)


def plain_waves(specs: Sequence[str], limits: SampleLimits) -> Iterator[np.ndarray]:
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
    Yields ``(utterances, markers of the samples skipped since the previous batch)``.

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

    def __call__(self, src: Iterable[Item]) -> Iterator[tuple[list[Utterance], list[Skipped]]]:
        rng = self.seeds.python_rng()
        skipped: list[Skipped] = []
        buffer: list[Utterance] = []
        capacity = max(self.bucket_buffer, 1)
        for item in src:
            if isinstance(item, Skipped):
                skipped.append(item)
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
                skipped = []
        if self.bucket_buffer:
            buffer.sort(key=lambda u: u.audio.shape[0])
        for batch in self._pack(buffer):
            yield batch, skipped
            skipped = []


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
        self, utterances: Sequence[Utterance], skipped: Sequence[Skipped] | None = None
    ) -> dict[str, Any]:
        """Collate ``utterances`` (B >= 0) and the markers of samples skipped since the previous batch.

        Returns:
            ``audio`` (B, S) float32 zero padded, ``audio_lens`` (B,) int64, ``keys``, ``texts``, ``metas``,
            ``skipped`` (``{"key", "reason", "detail"}`` of each skipped sample), ``stats`` (skip counts by
            reason, padding fraction, audio seconds) and, with a tokenizer, ``text_ids`` / ``context_ids``
            (lists of (L,) int64).
        """
        lens = torch.tensor([u.audio.shape[0] for u in utterances], dtype=torch.int64)
        longest = int(lens.max()) if len(utterances) else 0
        audio = torch.zeros(len(utterances), longest, dtype=torch.float32)
        for row, utterance in enumerate(utterances):
            audio[row, : utterance.audio.shape[0]] = torch.from_numpy(utterance.audio)
        skipped = list(skipped or ())
        counts = Counter(marker.reason for marker in skipped)
        stats = {f"skipped_{reason}": float(counts[reason]) for reason in SKIP_REASONS}
        stats["padding_fraction"] = 1.0 - float(lens.sum()) / audio.numel() if audio.numel() else 0.0
        stats["audio_seconds"] = float(lens.sum()) / SAMPLE_RATE
        batch: dict[str, Any] = {
            "audio": audio,
            "audio_lens": lens,
            "keys": [u.key for u in utterances],
            "texts": [u.meta["text"] for u in utterances],
            "metas": [u.meta for u in utterances],
            "skipped": [{"key": m.key, "reason": m.reason, "detail": m.detail} for m in skipped],
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
        skipped = [item for item in items if isinstance(item, Skipped)]
        return self([item for item in items if isinstance(item, Utterance)], skipped)

    def stage(self, src: Iterable[tuple[list[Utterance], list[Skipped]]]) -> Iterator[dict[str, Any]]:
        """Pipeline stage after :class:`DynamicBatcher`."""
        for utterances, skipped in src:
            yield self(utterances, skipped)
