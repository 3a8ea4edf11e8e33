"""Long (and other out-of-limit) utterances in evaluation and training: the planner and the reader apply
one rule, no empty batch reaches the model, every rank runs the same number of batches, evaluation
decodes long utterances up to its limit and names and counts the ones it skips, and its files appear
only complete."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import seed_asr.eval
from seed_asr.data.datamodule import ShardDataModule
from seed_asr.testing.synthetic import synthetic_record
from tests.reliability.hostile import (
    clean_corpus,
    encoded,
    evaluate_shards,
    hyps,
    sample,
    train_tiny,
    wave,
    write_shard,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clean_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def long_shard(corpus: Path) -> str:
    """Two good short utterances, one of 60 s and one of 130 s."""
    samples = {"short1": sample("short1", 0.8, 1), "short2": sample("short2", 0.6, 2),
               "long60": sample("long60", 60.0, 3), "long130": sample("long130", 130.0, 4)}
    return write_shard(corpus / "long" / "shard-000000.tar", samples)


@pytest.fixture(scope="module")
def trained(corpus: Path, long_shard: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny model trained with the long utterances among its validation shards: its run folder and
    final metrics."""
    folder = tmp_path_factory.mktemp("run") / "run"
    dev = corpus / "dev" / "shard-000000.tar"
    return folder, train_tiny(corpus, folder, f"data.val_shards=[{dev},{long_shard}]")


@pytest.fixture(scope="module")
def run(trained: tuple[Path, dict]) -> Path:
    return trained[0]


def test_training_validates_past_long_utterances_and_counts_them(trained: tuple[Path, dict]) -> None:
    run, metrics = trained
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert metrics["val/data_skipped_too_long"] == 2 and "val/wer" in metrics


def test_eval_decodes_long_utterances_up_to_its_limit_and_names_the_rest(
    run: Path, long_shard: str, tmp_path: Path
) -> None:
    metrics, results = evaluate_shards(run, [long_shard], tmp_path)
    assert set(hyps(tmp_path)) == {"short1", "short2", "long60"}  # max_duration: 120 s
    assert (metrics["num_utts"], metrics["num_skipped"], metrics["num_skipped/too_long"]) == (3, 1, 1)
    assert [(s["key"], s["reason"]) for s in results["skipped"]] == [("long130", "too_long")]
    assert "130.000 s > max_duration 120.0 s" in results["skipped"][0]["detail"]
    metrics, results = evaluate_shards(run, [long_shard], tmp_path / "limited", "max_duration=30")
    assert set(hyps(tmp_path / "limited")) == {"short1", "short2"}
    assert metrics["num_skipped"] == 2 and {s["key"] for s in results["skipped"]} == {"long60", "long130"}


def test_eval_files_appear_only_complete(run: Path, long_shard: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate_shards(run, [long_shard], tmp_path, "data.max_batch_seconds=1")
    before = {name: (tmp_path / name).read_text() for name in ("results.json", "hyps.jsonl")}
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("decoding failed")
        return real(*args, **kwargs)

    real = seed_asr.eval.transcripts
    monkeypatch.setattr(seed_asr.eval, "transcripts", failing)
    with pytest.raises(RuntimeError, match="decoding failed"):
        evaluate_shards(run, [long_shard], tmp_path, "data.max_batch_seconds=1")
    assert {name: (tmp_path / name).read_text() for name in before} == before


def eval_module(shards: list[str], rank: int = 0, world_size: int = 1, **kwargs) -> ShardDataModule:
    options = {"max_batch_seconds": 6.0, "min_duration": 0.3, "max_duration": 5.0, "num_workers": 0, **kwargs}
    return ShardDataModule(val_shards=shards, rank=rank, world_size=world_size, **options)


def test_planner_and_reader_agree_at_the_duration_limit(tmp_path: Path) -> None:
    """A record rounds 5.0004 s to 5.0: planned from the record, the sample passed the 5 s limit and was
    dropped when read, leaving its batch empty."""
    at_limit = {"flac": encoded(wave(5.0004, 1)), "json": synthetic_record("at_limit", 5.0)}
    shard = write_shard(tmp_path / "s.tar", {"ok": sample("ok", 1.0, 2), "at_limit": at_limit})
    batches = list(eval_module([shard]).val_dataloader())
    assert all(batch["keys"] for batch in batches)
    assert [k for b in batches for k in b["keys"]] == ["ok"]
    assert [s["key"] for b in batches for s in b["skipped"]] == ["at_limit"]
    assert sum(b["stats"]["skipped_too_long"] for b in batches) == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_no_empty_batch_and_equal_batch_counts_over_ranks(tmp_path: Path, num_workers: int) -> None:
    """Out-of-limit samples and samples whose audio header looks fine (a FLAC cut after its header, which
    says 4 s: alone in a batch), over 2 ranks: each good sample read once, each bad one named once, no
    empty batch."""
    good = {f"g{i}": sample(f"g{i}", 0.5 + 0.1 * i, i) for i in range(6)}
    cut = {f"cut{i}": {"flac": encoded(wave(4.0, 10 + i))[:200], "json": synthetic_record(f"cut{i}", 4.0)}
           for i in range(2)}
    out = {"short": sample("short", 0.1, 20), "long": sample("long", 7.0, 21)}
    shard = write_shard(tmp_path / "s.tar", {**good, **cut, **out})
    counts, keys, named = [], [], Counter()
    for rank in range(2):
        loader = eval_module([shard], rank, 2, num_workers=num_workers).val_dataloader()
        batches = list(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader) and all(batch["keys"] for batch in batches)
        keys += [k for b in batches for k in b["keys"]]
        named.update((s["key"], s["reason"]) for b in batches for s in b["skipped"])
    assert counts[0] == counts[1]
    assert sorted(keys) == sorted(good)
    bad = {"cut0": "undecodable", "cut1": "undecodable", "short": "too_short", "long": "too_long"}
    assert named == Counter(bad.items())
