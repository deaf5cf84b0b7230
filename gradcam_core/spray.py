"""Spectral relevance analysis (SpRAy, Lapuschkin et al. 2019): the strategies a model uses for one class.

The maps of one explained class are downsized to a small grid and normalised, joined into a symmetric
k-nearest-neighbour graph, and clustered spectrally: the number of clusters is where the normalised Laplacian's
sorted eigenvalues jump most (the eigengap), the clusters are k-means on its first eigenvectors (rows
normalised, Ng-Jordan-Weiss). Each cluster gets its size, accuracy, mean map and most typical members, and is
flagged as a possible shortcut when its mean map's heat sits on the border, in a corner, or outside a given
object box. Pure numpy/scipy. Example::

    found = spray(maps, correct=is_correct)
    [c.flags for c in found.clusters]           # [(), ("corner:top_left",)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.cluster.vq import kmeans2
from scipy.sparse.linalg import eigsh
from scipy.spatial import cKDTree

from .errors import AuditError
from .heat import Region, border_share, box_share, heat_grid, hottest_corner

__all__ = [
    "BORDER_FLAG", "CORNER_FLAG", "OUTSIDE_FLAG", "SPRAY_SIZE", "Cluster", "SprayResult", "eigengap",
    "spectral_clusters", "spray",
]

SPRAY_SIZE = 20
"""Maps are compared at this side length (the paper downsizes heatmaps likewise before clustering)."""
BORDER_FLAG = 0.6
"""A cluster's mean map with more of its heat on the border band than this is flagged (uniform: 0.36)."""
CORNER_FLAG = 0.3
"""... more than this in one corner (uniform: 0.04)."""
OUTSIDE_FLAG = 0.5
"""... more than this outside the object box, when one is given."""
DENSE_LIMIT = 1500
"""Up to this many maps the Laplacian is decomposed densely; beyond, its few smallest eigenpairs sparsely."""
TYPICAL = 5
MIN_NEIGHBOURS = 5
"""Fewer neighbours split one homogeneous strategy into spurious clusters (the graph gets sparse)."""


@dataclass(frozen=True, eq=False)
class Cluster:
    """One strategy of the model for one class.

    Attributes:
        target: The explained class.
        index: The cluster's number within the class (0 is the largest).
        size: How many maps it holds.
        accuracy: Share of its labelled images the model classifies correctly (``None``: none labelled).
        mean_map: ``(SPRAY_SIZE, SPRAY_SIZE)`` mean of its normalised maps, scaled to a maximum of 1.
        members: Positions of its maps in the input, most typical (closest to the mean) first.
        border_share: Share of the mean map's heat on the border band.
        corner_share: Share in its hottest corner, named by ``corner``.
        corner: ``"top_left"``, ``"top_right"``, ``"bottom_left"`` or ``"bottom_right"``.
        outside_share: Share outside the object box (``None`` without one).
        flags: Why it may be a shortcut: ``"border"``, ``"corner:<name>"``, ``"outside"``; empty when none.
    """

    target: str
    index: int
    size: int
    accuracy: float | None
    mean_map: np.ndarray
    members: tuple[int, ...]
    border_share: float
    corner_share: float
    corner: str
    outside_share: float | None
    flags: tuple[str, ...]

    @property
    def typical(self) -> tuple[int, ...]:
        """The most typical members (at most 5)."""
        return self.members[:TYPICAL]


@dataclass(frozen=True, eq=False)
class SprayResult:
    """SpRAy of one class.

    Attributes:
        clusters: Largest first.
        assignments: ``(N,)`` cluster index of each map.
        eigenvalues: The smallest eigenvalues of the graph's normalised Laplacian, ascending.
    """

    clusters: tuple[Cluster, ...]
    assignments: np.ndarray
    eigenvalues: np.ndarray


def spray(
    maps: Sequence[np.ndarray],
    correct: Sequence[bool | None] | None = None,
    *,
    target: str = "",
    object_box: Region | None = None,
    max_clusters: int = 8,
    neighbours: int | None = None,
    seed: int = 0,
) -> SprayResult:
    """Cluster the maps of one class into strategies and flag possible shortcuts.

    Example: ``spray([e.raw_map for e in results], target="horse").clusters[0].flags``.

    Args:
        maps: Non-negative ``(h, w)`` maps (sizes may differ: each is resized).
        correct: Per map, whether the model was right (``None``: no true label).
        target: The explained class, recorded on each cluster.
        object_box: Where the object is, in fractions of the image; heat outside it is flagged.
        max_clusters: Most clusters the eigengap may choose.
        neighbours: k of the nearest-neighbour graph (default: the square root of the count, 5 to 30; a strategy
            needs more maps than k to stand apart).
        seed: Seed of k-means.

    Raises:
        AuditError: no maps.
    """
    if not maps:
        raise AuditError("SpRAy needs at least one map.")
    features = np.stack([_features(m) for m in maps])
    assignments, eigenvalues = spectral_clusters(
        features, max_clusters=max_clusters, neighbours=neighbours, seed=seed
    )
    marks = None if correct is None else list(correct)
    clusters = [
        _cluster(features, np.flatnonzero(assignments == label), marks, target, object_box)
        for label in range(int(assignments.max()) + 1)
    ]
    order = sorted(range(len(clusters)), key=lambda i: -clusters[i].size)
    renumber = np.empty(len(order), int)
    renumber[order] = np.arange(len(order))
    ranked = tuple(_renumbered(clusters[old], new) for new, old in enumerate(order))
    return SprayResult(ranked, renumber[assignments], eigenvalues)


def spectral_clusters(
    features: np.ndarray, *, max_clusters: int = 8, neighbours: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(assignments, eigenvalues)`` of spectral clustering of the rows of ``features`` on a kNN graph.

    Example: ``spectral_clusters(np.random.rand(40, 256))[0].shape  # (40,)``.
    """
    count = len(features)
    if count < 3:
        return np.zeros(count, int), np.zeros(count)
    k = neighbours or int(np.clip(math.ceil(math.sqrt(count)), MIN_NEIGHBOURS, 30))
    k = min(k, count - 1)
    affinity = _knn_graph(features, k)
    eigenvalues, vectors = _smallest_eigenpairs(affinity, min(max_clusters + 1, count))
    clusters = eigengap(eigenvalues[: max_clusters + 1])
    if clusters == 1:
        return np.zeros(count, int), eigenvalues
    embedding = vectors[:, :clusters]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return _kmeans(embedding, clusters, seed), eigenvalues


def eigengap(eigenvalues: np.ndarray) -> int:
    """How many clusters the sorted Laplacian eigenvalues suggest: ``k`` where ``λ_k - λ_(k-1)`` is largest.

    Example: ``eigengap(np.array([0, 0, 0.9, 0.95]))  # 2``.
    """
    values = np.sort(np.asarray(eigenvalues, np.float64))
    if len(values) < 2:
        return 1
    return int(np.argmax(np.diff(values))) + 1


def _features(raw_map: np.ndarray) -> np.ndarray:
    """A map resized to ``SPRAY_SIZE`` squared, as a flat vector summing to 1 (zeros when it has no heat)."""
    return heat_grid(raw_map, SPRAY_SIZE).ravel()


def _knn_graph(features: np.ndarray, k: int) -> sparse.csr_matrix:
    """Symmetric binary k-nearest-neighbour adjacency (i ~ j when either is among the other's k nearest)."""
    count = len(features)
    _, nearest = cKDTree(features).query(features, k=k + 1)
    rows = np.repeat(np.arange(count), k)
    cols = nearest[:, 1:].ravel()
    graph = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count))
    graph = graph.maximum(graph.T)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def _smallest_eigenpairs(affinity: sparse.csr_matrix, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues (ascending) and eigenvectors of the normalised Laplacian."""
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    scale = sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    normalised = scale @ affinity @ scale  # L = I - normalised: its smallest are the largest of normalised
    if affinity.shape[0] <= DENSE_LIMIT:
        values, vectors = np.linalg.eigh(normalised.toarray())
        values, vectors = values[::-1][:count], vectors[:, ::-1][:, :count]
    else:
        start = np.random.default_rng(0).random(affinity.shape[0])
        values, vectors = eigsh(normalised, k=count, which="LA", v0=start)
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
    return np.clip(1.0 - values, 0.0, 2.0), vectors


def _kmeans(points: np.ndarray, clusters: int, seed: int, restarts: int = 8) -> np.ndarray:
    """k-means labels with the lowest inertia over a few k-means++ starts, renumbered in order of appearance."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, math.inf
    for _ in range(restarts):
        centres, labels = kmeans2(points, clusters, minit="++", seed=rng)
        inertia = float(((points - centres[labels]) ** 2).sum())
        if inertia < best_inertia and len(np.unique(labels)) == clusters:
            best, best_inertia = labels, inertia
    if best is None:  # every start lost a cluster: keep the last labels, compacted
        best = labels
    _, first = np.unique(best, return_index=True)
    order = np.argsort(first)
    mapping = np.empty(best.max() + 1, int)
    mapping[np.unique(best)[order]] = np.arange(len(order))
    return mapping[best]


def _cluster(
    features: np.ndarray,
    members: np.ndarray,
    correct: list[bool | None] | None,
    target: str,
    object_box: Region | None,
) -> Cluster:
    """Summary and flags of the maps at ``members``."""
    mean = features[members].mean(axis=0)
    distance = np.linalg.norm(features[members] - mean, axis=1)
    ranked = tuple(int(i) for i in members[np.argsort(distance, kind="stable")])
    grid = mean.reshape(SPRAY_SIZE, SPRAY_SIZE)
    total = float(grid.sum())
    normalised = grid / total if total > 0 else grid
    border = border_share(normalised)
    corner, corner_share = hottest_corner(normalised)
    outside = None if object_box is None or not total else 1.0 - box_share(normalised, object_box)
    flags = []
    if border > BORDER_FLAG:
        flags.append("border")
    if corner_share > CORNER_FLAG:
        flags.append(f"corner:{corner}")
    if outside is not None and outside > OUTSIDE_FLAG:
        flags.append("outside")
    marks = [] if correct is None else [correct[i] for i in members if correct[i] is not None]
    peak = float(grid.max())
    return Cluster(
        target=target,
        index=0,
        size=len(members),
        accuracy=float(np.mean(marks)) if marks else None,
        mean_map=(grid / peak if peak > 0 else grid).astype(np.float32),
        members=ranked,
        border_share=border,
        corner_share=corner_share,
        corner=corner,
        outside_share=outside,
        flags=tuple(flags),
    )


def _renumbered(cluster: Cluster, index: int) -> Cluster:
    return Cluster(**{**cluster.__dict__, "index": index})
