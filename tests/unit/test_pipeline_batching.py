"""Dynamic batching, bucketing, evaluation batch plans and the explicit shard split."""

from collections import Counter

import numpy as np
import pytest

from seed_asr.data.pipeline import DynamicBatcher, Skipped, Utterance, assign_shards, pack_by_length
from seed_asr.data.shard_index import plan_eval_batches


def utterances(lengths, first=0):
    return [
        Utterance(f"u{first + i}", np.zeros(n, dtype=np.float32), {"text": ""}) for i, n in enumerate(lengths)
    ]


def padding(batches):
    padded = sum(len(b) * max(u.audio.shape[0] for u in b) for b in batches)
    return 1 - sum(u.audio.shape[0] for b in batches for u in b) / padded


def test_pack_by_length_keeps_order_budget_and_size():
    lengths = [5, 3, 9, 2, 2, 8, 1, 30, 4]
    batches = pack_by_length(lengths, max_total=18, max_batch_size=3)
    assert [i for b in batches for i in b] == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 18
    assert [7] in batches  # longer than the budget: alone


def test_dynamic_batcher_respects_seconds_and_bucketing_lowers_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8_000, 160_000, size=300).tolist()  # 0.5 .. 10 s
    stream = [
        *utterances(lengths[:150]),
        Skipped("bad", "undecodable"),
        *utterances(lengths[150:], first=150),
    ]
    results = {}
    for buffer in (0, 200):
        out = list(DynamicBatcher(max_batch_seconds=40, bucket_buffer=buffer)(iter(stream)))
        batches = [b for b, _ in out]
        assert sorted(u.key for b in batches for u in b) == sorted(u.key for u in utterances(lengths))
        assert all(len(b) * max(u.audio.shape[0] for u in b) <= 40 * 16_000 for b in batches)
        assert Counter(marker.reason for _, skipped in out for marker in skipped) == Counter(undecodable=1)
        results[buffer] = padding(batches)
    assert results[200] < 0.5 * results[0]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_eval_plan_reads_each_sample_once_with_equal_batch_counts(world_size):
    durations = list(np.random.default_rng(world_size).uniform(0.5, 9.0, size=23))
    plan = plan_eval_batches(durations, max_batch_seconds=12.0, max_batch_size=None, world_size=world_size)
    assert len({len(batches) for batches in plan}) == 1
    assert sorted(i for batches in plan for b in batches for i in b) == list(range(23))


def test_eval_plan_handles_all_singleton_batches_and_too_few_samples():
    plan = plan_eval_batches([10.0] * 5, max_batch_seconds=10.0, max_batch_size=None, world_size=2)
    assert [len(b) for b in plan] == [2, 2]
    assert sorted(i for batches in plan for b in batches for i in b) == list(range(5))
    with pytest.raises(ValueError, match="fewer than the 3 ranks"):
        plan_eval_batches([1.0, 1.0], 10.0, None, world_size=3)


def test_assign_shards_is_disjoint_and_complete_over_ranks_and_workers():
    shards = [f"s{i}" for i in range(11)]
    taken = [assign_shards(shards, r, 2, w, 2) for r in range(2) for w in range(2)]
    assert sorted(s for part in taken for s in part) == sorted(shards)
    assert all(part for part in taken)
    few = [assign_shards(shards[:3], r, 2, w, 2) for r in range(2) for w in range(2)]
    assert all(len(part) == 1 for part in few) and {p[0] for p in few} == set(shards[:3])
    with pytest.raises(ValueError, match="rank 2 of 2"):
        assign_shards(shards, 2, 2, 0, 1)
