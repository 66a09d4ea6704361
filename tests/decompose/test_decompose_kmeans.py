"""K-Means: scikit-learn's KMeans on the CPU, and the torch path (CUDA) follows scikit-learn's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans as SkKMeans

from mmconcepts.decompose import KMeans
from mmconcepts.decompose.kmeans import lloyd, mean_variance


def _blobs(n_per=80, k=5, d=16, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(k, d, generator=g)
    labels = torch.arange(k).repeat_interleave(n_per)
    Z = centres[labels] + spread * torch.randn(k * n_per, d, generator=g)
    perm = torch.randperm(k * n_per, generator=g)
    return Z[perm], labels[perm]


def _same_partition(a, b) -> bool:
    """Equal up to a permutation of the labels."""
    a, b = np.asarray(a), np.asarray(b)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() == len(a)


@pytest.mark.parametrize("seed, n_init, init", [(0, 1, "kmeans++"), (3, 1, "kmeans++"), (1, 3, "random")])
def test_matches_sklearn_kmeans_with_the_same_seed(seed, n_init, init):
    Z, truth = _blobs(seed=seed)
    ours = KMeans(5, seed=seed, n_init=n_init, init=init).fit(Z)
    ref = SkKMeans(5, random_state=seed, n_init=n_init, init="k-means++" if init == "kmeans++" else "random",
                   algorithm="lloyd").fit(Z.numpy())
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-4)
    assert ours.n_iter_ == ref.n_iter_
    ours_labels = torch.cdist(Z, ours.components_).argmin(1).numpy()
    assert _same_partition(ours_labels, ref.labels_)
    assert _same_partition(ours_labels, truth.numpy())  # well separated: the true clusters


def test_matches_sklearn_on_overlapping_clusters():
    """Where the iterations and the stopping rule matter (clusters that overlap, many features)."""
    Z, _ = _blobs(n_per=60, k=6, d=256, spread=6.0, seed=5)
    ours = KMeans(6, seed=2, tol=1e-3).fit(Z)
    ref = SkKMeans(6, random_state=2, n_init=1, tol=1e-3).fit(Z.numpy())
    assert ours.n_iter_ == ref.n_iter_ and ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-4)


def test_torch_lloyd_stops_on_the_mean_feature_variance():
    """The GPU path's rule is scikit-learn's: stop once the centroids' squared shift <= tol * mean(var(Z, 0)).

    The old rule summed the variances over the features (D times larger), so it stopped too early.
    """
    Z = torch.randn(1000, 64, generator=torch.Generator().manual_seed(0))  # no clusters: slow convergence
    C0 = Z[:8].clone()
    shifts, C = [], C0
    for _ in range(100):  # the centroid shifts, one Lloyd step at a time
        C_new, _, _ = lloyd(Z, C, max_iter=1, tol_abs=-1.0)
        shifts.append(float((C_new - C).square().sum()))
        C = C_new
    tol = 1e-3
    var = Z.double().var(0, correction=0)
    assert mean_variance(Z) == pytest.approx(float(var.mean()), rel=1e-9)
    expected = next(i for i, s in enumerate(shifts, 1) if s <= tol * float(var.mean()))
    summed = next(i for i, s in enumerate(shifts, 1) if s <= tol * float(Z.double().var(0).sum()))
    assert summed < expected  # the data tell the two rules apart
    _, _, n_iter = lloyd(Z, C0, max_iter=300, tol=tol)
    assert n_iter == expected
    ref = SkKMeans(8, init=C0.numpy(), n_init=1, tol=tol).fit(Z.numpy())
    assert n_iter == ref.n_iter_
