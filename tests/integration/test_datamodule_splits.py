"""ShardDataModule on real shards and real DataLoader workers: rank/worker splits, equal batch counts,
bad audio, mixing weights and the Hydra configs."""

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from torch.utils.data import DataLoader, get_worker_info

from seed_asr.data.audio import encode_flac
from seed_asr.data.datamodule import ShardDataModule
from seed_asr.data.pipeline import CycledShards
from seed_asr.testing.synthetic import synthetic_record, synthetic_wave, write_synthetic_shards

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    uneven = []
    for i, count in enumerate([3, 7, 2, 5, 4]):
        uneven += write_synthetic_shards(root / "uneven", 1, count, 0.3, 1.2, seed=i, prefix=f"u{i}")
    return {
        "uneven": [str(p) for p in uneven],
        "a": str(root / "a" / "a-*.tar"),
        "b": str(root / "b" / "b-*.tar"),
        "mix": (
            write_synthetic_shards(root / "a", 2, 40, 0.2, 0.2, seed=7, prefix="a"),
            write_synthetic_shards(root / "b", 2, 40, 0.2, 0.2, seed=8, prefix="b"),
        ),
        "bad": str(write_bad_shard(root / "bad.tar")),
    }


def write_bad_shard(path: Path) -> Path:
    rng = np.random.default_rng(3)

    def audio(wave, sr, channels=1):
        buf = io.BytesIO()
        data = np.stack([wave] * channels, 1) if channels > 1 else wave
        sf.write(buf, data, sr, format="FLAC", subtype="PCM_16")
        return buf.getvalue()

    samples = {
        "ok": encode_flac(synthetic_wave(rng, 1.0)),
        "stereo": audio(synthetic_wave(rng, 1.0, 16000), 16000, channels=2),
        "rate8k": audio(synthetic_wave(rng, 1.0, 8000), 8000),
        "rate44k": audio(synthetic_wave(rng, 1.0, 44100), 44100),
        "corrupt": b"\x00garbage" * 100,
        "empty": b"",
        "tooshort": encode_flac(synthetic_wave(rng, 0.05)),
        "toolong": encode_flac(synthetic_wave(rng, 6.0)),
    }
    seconds = {"tooshort": 0.05, "toolong": 6.0}  # the records say what the audio holds
    with wds.TarWriter(str(path)) as writer:
        for key, data in samples.items():
            record = synthetic_record(key, seconds.get(key, 1.0))
            writer.write({"__key__": key, "flac": data, "json": json.dumps(record).encode()})
    return path


def module(**kwargs) -> ShardDataModule:
    defaults = dict(max_batch_seconds=4.0, max_duration=3.0, bucket_buffer=8, num_workers=2, min_duration=0.1)
    return ShardDataModule(**{**defaults, **kwargs})


def all_keys(paths):
    return {
        s["__key__"]
        for p in paths
        for s in wds.DataPipeline(wds.SimpleShardList([p]), wds.tarfile_to_samples())
    }


def test_val_reads_each_sample_once_over_ranks_and_workers_with_equal_batch_counts(shards):
    seen, counts = [], []
    for rank in range(2):
        loader = module(val_shards=shards["uneven"], rank=rank, world_size=2).val_dataloader()
        keys = [k for batch in loader for k in batch["keys"]]
        seen += keys
        counts.append(len(loader))
        assert counts[-1] == sum(1 for _ in loader)
    assert sorted(seen) == sorted(all_keys(shards["uneven"]))
    assert counts[0] == counts[1]


def test_train_gives_every_rank_the_same_batch_count_from_uneven_shards(shards):
    counts = []
    for rank in range(2):
        dm = module(train_shards=shards["uneven"][:3], rank=rank, world_size=2, batches_per_epoch=5)
        loader = dm.train_dataloader()
        batches = list(loader)
        counts.append(len(batches))
        assert len(loader) == len(batches)
        assert all(b["audio"].shape[0] * b["audio"].shape[1] <= 4.0 * 16000 for b in batches)
    assert counts == [6, 6]  # ceil(5 / 2 workers) per worker


def tag_worker(src):
    for sample in src:
        yield {**sample, "worker": get_worker_info().id}


def test_train_shard_split_is_disjoint_and_complete_over_ranks_and_workers(shards):
    owners = {}
    for rank in range(2):
        source = wds.DataPipeline(CycledShards(shards["uneven"], rank, 2, seed=0), tag_worker, wds.slice(2))
        for item in DataLoader(source, batch_size=None, num_workers=2):
            owners.setdefault(item["url"], set()).add((rank, int(item["worker"])))
    assert set(owners) == set(shards["uneven"])
    assert all(len(who) == 1 for who in owners.values())  # 5 shards over 4 workers: one owner each


def test_bad_audio_is_skipped_counted_or_repaired(shards):
    val = list(module(val_shards=shards["bad"]).val_dataloader())
    keys = sorted(k for b in val for k in b["keys"])
    assert keys == ["ok", "rate44k", "rate8k", "stereo"]
    lens = {k: int(n) for b in val for k, n in zip(b["keys"], b["audio_lens"], strict=True)}
    assert set(lens.values()) == {16000}
    totals = sum((Counter(b["stats"]) for b in val), Counter())
    assert [totals[f"skipped_{r}"] for r in ("undecodable", "empty", "too_short", "too_long")] == [1, 1, 1, 1]
    train = list(module(train_shards=shards["bad"], num_workers=0, batches_per_epoch=3).train_dataloader())
    assert {k for b in train for k in b["keys"]} <= set(keys)
    totals = sum((Counter(b["stats"]) for b in train), Counter())
    assert min(totals[f"skipped_{r}"] for r in ("undecodable", "empty", "too_short", "too_long")) >= 1


def test_mixing_weights_give_the_requested_proportions(shards):
    dm = module(
        train_shards=[shards["a"], shards["b"]], train_weights=[3.0, 1.0], num_workers=0, batches_per_epoch=25
    )
    keys = [k for b in dm.train_dataloader() for k in b["keys"]]
    assert len(keys) >= 400
    share = sum(k.startswith("a") for k in keys) / len(keys)
    assert abs(share - 0.75) < 0.07


def test_loader_workers_start_from_a_fork_server_not_from_the_threaded_training_process(shards):
    """Forking a process that runs threads can deadlock the child (python/cpython#112275); the datasets
    pickle into fork-server workers and stream the same batches as forked workers would."""
    dm = module(train_shards=shards["uneven"][:3], val_shards=shards["uneven"], batches_per_epoch=4)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.multiprocessing_context.get_start_method() == "forkserver"
    torch.manual_seed(0)  # the loader draws its workers' seeds from it, as in a seeded run
    forked = DataLoader(dm.train_dataset(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    keys = [b["keys"] for b in forked]
    torch.manual_seed(0)
    assert [b["keys"] for b in dm.train_dataloader()] == keys
    assert len(keys) == len(dm.train_dataloader()) == 4
