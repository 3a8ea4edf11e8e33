"""K-means targets for the second ("iterative") round of LUISE self-supervised training.

The first round predicts random-projection labels of the fbank input (``ssl_targets.py``); the next round
predicts k-means cluster ids of an intermediate layer of the first-round encoder, as HuBERT does.

K-means is written in torch rather than taken from scikit-learn because (1) it runs where the
encoder's features already are (GPU), with no host copy of millions of frames, (2) it is seeded by a
``torch.Generator`` like every other random choice of the project, and (3) it avoids a dependency
whose Lloyd iterations would be the only thing used. Full-batch Lloyd with chunked distances keeps
memory bounded at (chunk x K) and guarantees a non-increasing inertia, which mini-batch k-means does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


def nearest_centroid(x: Tensor, centroids: Tensor, chunk_size: int = 8192) -> tuple[Tensor, Tensor]:
    """Index of and squared L2 distance to the nearest centroid, computed in chunks of rows.

    Args:
        x: points (N, D).
        centroids: (K, D).
        chunk_size: rows of ``x`` per distance matrix (memory is chunk_size x K).

    Returns:
        ``(index (N,) int64, squared distance (N,) float32)``, computed in float32 even under autocast.
    """
    if x.dim() != 2 or centroids.dim() != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} and centroids {tuple(centroids.shape)} must be (N, D), (K, D)")
    x, centroids = x.float(), centroids.float()
    c_sq = centroids.pow(2).sum(1)
    indices, distances = [], []
    with torch.autocast(x.device.type, enabled=False):
        for rows in x.split(chunk_size):
            d = (rows.pow(2).sum(1, keepdim=True) - 2 * rows @ centroids.T + c_sq).clamp_min_(0)
            dist, idx = d.min(dim=1)
            indices.append(idx)
            distances.append(dist)
    return torch.cat(indices), torch.cat(distances)


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding: each next centre is drawn with probability proportional to D(x)^2.

    Args:
        x: points (N, D), N >= k.
        k: number of centres.
        generator: random source (its device is used for sampling).

    Returns:
        Initial centroids (k, D).
    """
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    device = generator.device if generator is not None else x.device
    first = torch.randint(n, (1,), generator=generator, device=device).to(x.device)
    centroids = x[first]
    min_dist = nearest_centroid(x, centroids)[1]
    for _ in range(1, k):
        weights = min_dist.to(device)
        if weights.sum() <= 0:  # fewer distinct points than k: any point will do
            weights = torch.ones_like(weights)
        nxt = torch.multinomial(weights, 1, generator=generator).to(x.device)
        centroids = torch.cat([centroids, x[nxt]])
        min_dist = torch.minimum(min_dist, nearest_centroid(x, x[nxt])[1])
    return centroids


@dataclass(frozen=True)
class KMeansResult:
    """Fitted centroids (K, D) and the inertia (sum of squared distances) before each update."""

    centroids: Tensor
    inertia: list[float]


def fit_kmeans(
    x: Tensor,
    num_clusters: int,
    max_iters: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    chunk_size: int = 8192,
) -> KMeansResult:
    """Full-batch Lloyd k-means with k-means++ seeding.

    Args:
        x: points (N, D); computed in float32 on their own device.
        num_clusters: K.
        max_iters: most Lloyd iterations.
        tol: stop when the inertia improves by less than this fraction.
        generator: random source of the seeding.
        chunk_size: rows per distance matrix.

    Returns:
        The centroids (K, D) and the inertia of every assignment step (non-increasing).
        An empty cluster keeps its previous centroid.
    """
    x = x.float()
    centroids = kmeans_plusplus(x, num_clusters, generator)
    inertia: list[float] = []
    for _ in range(max_iters):
        assign, dist = nearest_centroid(x, centroids, chunk_size)
        inertia.append(float(dist.double().sum()))
        if len(inertia) > 1 and inertia[-2] - inertia[-1] <= tol * inertia[-2]:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=num_clusters).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return KMeansResult(centroids=centroids, inertia=inertia)


class KMeansTokenizer(nn.Module):
    """Maps encoder features to their nearest k-means centroid.

    The centroids are a buffer: saved in the state dict, never trained.
    """

    centroids: Tensor

    def __init__(self, num_clusters: int, dim: int) -> None:
        """Args: num_clusters: K; dim: feature size D (centroids start at zero: load or ``set_centroids``)."""
        super().__init__()
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))

    def set_centroids(self, centroids: Tensor) -> None:
        """Copy fitted centroids (K, D) into the buffer."""
        if centroids.shape != self.centroids.shape:
            raise ValueError(f"centroids {tuple(centroids.shape)} != expected {tuple(self.centroids.shape)}")
        self.centroids.copy_(centroids)

    def forward(self, hidden: Tensor) -> Tensor:
        """Args: hidden: (B, T', D). Returns: cluster ids (B, T') int64."""
        idx, _ = nearest_centroid(hidden.reshape(-1, hidden.shape[-1]), self.centroids)
        return idx.view(hidden.shape[:-1])
