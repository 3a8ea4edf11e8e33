"""K-means on hand-built clusters, the k-means tokenizer, and the iterative-round targets."""

import pytest
import torch
from ssl_fixtures import tiny_conformer

from seed_asr.losses.cross_entropy import IGNORE_INDEX
from seed_asr.models.kmeans import KMeansTokenizer, fit_kmeans, kmeans_plusplus, nearest_centroid
from seed_asr.models.ssl_targets import KMeansTarget, collect_features
from seed_asr.testing.threads import torch_threads


def blobs(centres: torch.Tensor, per_cluster: int, std: float, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    truth = torch.arange(len(centres)).repeat_interleave(per_cluster)
    return centres[truth] + std * torch.randn(len(truth), centres.shape[1], generator=gen), truth


def test_nearest_centroid_matches_cdist():
    gen = torch.Generator().manual_seed(0)
    x, c = torch.randn(1000, 16, generator=gen), torch.randn(37, 16, generator=gen)
    idx, dist = nearest_centroid(x, c, chunk_size=128)
    ref_dist, ref_idx = torch.cdist(x.double(), c.double()).pow(2).min(1)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(dist.double(), ref_dist, rtol=1e-4)


def test_recovers_separated_clusters():
    centres = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10], [5, 20]]).repeat(1, 4)  # 8-D
    x, truth = blobs(centres, per_cluster=200, std=0.5, seed=1)
    result = fit_kmeans(x, 5, generator=torch.Generator().manual_seed(0))
    assign, _ = nearest_centroid(x, result.centroids)
    # Each fitted cluster is exactly one true cluster (a bijection), and its centre is the blob's centre.
    pairs = set(zip(truth.tolist(), assign.tolist(), strict=True))
    assert len(pairs) == 5 and len({a for _, a in pairs}) == 5
    for t, a in pairs:
        assert torch.dist(result.centroids[a], centres[t]) < 0.15


def test_inertia_never_increases_and_seed_fixes_the_result():
    # Overlapping blobs and k != number of blobs: many Lloyd iterations before convergence.
    centres = torch.randn(20, 6, generator=torch.Generator().manual_seed(2)) * 3
    x, _ = blobs(centres, per_cluster=100, std=1.0, seed=3)
    result = fit_kmeans(x, 8, max_iters=200, tol=0, generator=torch.Generator().manual_seed(0))
    assert len(result.inertia) > 5
    diffs = torch.diff(torch.tensor(result.inertia, dtype=torch.float64))
    assert (diffs <= 1e-6 * result.inertia[0]).all()
    assert result.inertia[-1] < result.inertia[0]
    again = fit_kmeans(x, 8, max_iters=200, tol=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.centroids, again.centroids)


def test_kmeans_plusplus_picks_distinct_data_points():
    x, _ = blobs(torch.tensor([[0.0, 0], [100, 0], [0, 100]]), per_cluster=50, std=1.0, seed=4)
    centres = torch.tensor([[0.0, 0], [100, 0], [0, 100]])
    init = kmeans_plusplus(x, 3, generator=torch.Generator().manual_seed(0))
    # D^2 sampling with far-apart blobs puts one centre in each blob (almost surely).
    assert sorted(nearest_centroid(init, centres)[0].tolist()) == [0, 1, 2]
    assert all((x == c).all(1).any() for c in init)
    with pytest.raises(ValueError, match="at least k"):
        kmeans_plusplus(x[:2], 3)


def test_tokenizer_labels_and_state_dict():
    centroids = torch.tensor([[0.0, 0], [1, 1], [5, 5]])
    tok = KMeansTokenizer(3, 2)
    tok.set_centroids(centroids)
    hidden = torch.tensor([[[0.1, 0.2], [4.0, 4.5]], [[0.9, 1.2], [-3.0, 0.0]]])
    assert tok(hidden).tolist() == [[0, 2], [1, 0]]
    assert list(tok.parameters()) == []
    loaded = KMeansTokenizer(3, 2)
    loaded.load_state_dict(tok.state_dict())
    assert torch.equal(loaded(hidden), tok(hidden))
    with pytest.raises(ValueError, match="centroids"):
        tok.set_centroids(torch.zeros(4, 2))


@pytest.fixture
def encoder_and_batches():
    torch.manual_seed(0)
    encoder = tiny_conformer(d_model=8, num_layers=2)
    gen = torch.Generator().manual_seed(5)
    batches = [
        {"feats": torch.randn(2, 40, 80, generator=gen), "feat_lens": torch.tensor([40, 23])},
        {"feats": torch.randn(2, 30, 80, generator=gen), "feat_lens": torch.tensor([30, 30])},
    ]
    with torch_threads(1):
        yield encoder, batches


def test_collect_features_takes_valid_frames_of_the_layer(encoder_and_batches):
    encoder, batches = encoder_and_batches
    encoder.train()
    feats = collect_features(encoder, batches, layer=1, max_frames=10_000)
    expected = []
    with torch.no_grad():
        for b in batches:
            out = encoder(b["feats"], b["feat_lens"], output_hidden_states=True)
            expected += [out.hidden_states[1][i, :n] for i, n in enumerate(out.lens.tolist())]
    assert torch.allclose(feats, torch.cat(expected))
    assert encoder.training and not feats.requires_grad
    assert collect_features(encoder, batches, layer=1, max_frames=12).shape == (12, 8)
    gen = torch.Generator().manual_seed(0)
    sampled = collect_features(encoder, batches, 1, 10_000, keep_prob=0.5, generator=gen)
    assert 0 < len(sampled) < len(feats)
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        collect_features(encoder, batches, layer=7, max_frames=10)


def test_kmeans_target_labels_layer_frames(encoder_and_batches):
    encoder, batches = encoder_and_batches
    data = collect_features(encoder, batches, layer=-1, max_frames=10_000)
    tok = KMeansTokenizer(4, 8)
    tok.set_centroids(fit_kmeans(data, 4, generator=torch.Generator().manual_seed(0)).centroids)
    target = KMeansTarget(encoder, tok, layer=-1).train()
    assert not target.encoder.training and not any(p.requires_grad for p in target.parameters())
    b = batches[0]
    labels = target(b["feats"], b["feat_lens"])
    out = encoder(b["feats"], b["feat_lens"])
    assert labels.shape == out.hidden.shape[:2]
    assert torch.equal(labels[0], tok(out.hidden)[0])
    n = int(out.lens[1])
    assert torch.equal(labels[1, :n], tok(out.hidden)[1, :n]) and (labels[1, n:] == IGNORE_INDEX).all()
