"""K-Means concepts (a baseline of the paper): centroids as concepts, activation ``1 / (1 + distance)``.

Also home of the seeding used by the other methods: :func:`kmeans_plusplus` (greedy k-means++, as
scikit-learn) and :func:`lloyd`, both in torch, deterministic for a given ``torch.Generator`` on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mmconcepts.decompose.base import (ConceptDictionary, check_choice, check_float, check_int,
                                       check_n_concepts, relative_error, resolve_device)


def sq_distances(Z: torch.Tensor, C: torch.Tensor, z_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``Z`` (``N x D``) and ``C`` (``M x D``): ``N x M``."""
    if z_sq is None:
        z_sq = Z.square().sum(1)
    return (z_sq[:, None] - 2.0 * (Z @ C.t()) + C.square().sum(1)[None, :]).clamp_min_(0.0)


def kmeans_plusplus(Z: torch.Tensor, k: int, generator: torch.Generator,
                    n_local_trials: int | None = None) -> torch.Tensor:
    """Indices of ``k`` rows of ``Z`` chosen by greedy k-means++ (D^2 sampling, best of a few trials).

    ``generator`` is a CPU generator; the sampling happens on the CPU, the distances on ``Z``'s device.
    """
    N = Z.shape[0]
    trials = n_local_trials or 2 + int(math.log(k))
    z_sq = Z.square().sum(1)
    first = int(torch.randint(N, (1,), generator=generator))
    chosen = [first]
    closest = sq_distances(Z, Z[first:first + 1], z_sq)[:, 0]
    for _ in range(1, k):
        weights = closest.double().cpu()
        if float(weights.sum()) <= 0.0:  # fewer distinct rows than k: pick any row not chosen yet
            mask = torch.ones(N, dtype=torch.double)
            mask[chosen] = 0.0
            weights = mask
        cand = torch.multinomial(weights, trials, replacement=True, generator=generator)
        d = torch.minimum(sq_distances(Z, Z[cand.to(Z.device)], z_sq), closest[:, None])
        best = int(torch.argmin(d.double().sum(0)))
        chosen.append(int(cand[best]))
        closest = d[:, best]
    return torch.tensor(chosen, dtype=torch.long)


def lloyd(Z: torch.Tensor, C: torch.Tensor, *, max_iter: int = 300, tol: float = 1e-4
          ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd iterations from centroids ``C``; returns ``(C, labels, n_iter)``.

    Cluster sums use a one-hot matrix product (deterministic on every device). An empty cluster takes the
    sample farthest from its centroid. Stops when the centroids move by less than ``tol`` times the mean
    feature variance (scikit-learn's rule).
    """
    K = C.shape[0]
    z_sq = Z.square().sum(1)
    n = Z.shape[0]
    total_var = (float(z_sq.double().sum()) - n * float(Z.mean(0).double().square().sum())) / max(n - 1, 1)
    tol_abs = tol * max(total_var, 0.0)
    labels = torch.zeros(Z.shape[0], dtype=torch.long, device=Z.device)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        d = sq_distances(Z, C, z_sq)
        dmin, labels = d.min(1)
        onehot = torch.nn.functional.one_hot(labels, K).to(Z.dtype)
        counts = onehot.sum(0)
        new = (onehot.t() @ Z) / counts.clamp_min(1.0)[:, None]
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            far = torch.argsort(dmin, descending=True, stable=True)[: len(empty)]
            new[empty] = Z[far]
        shift = float((new - C).square().sum())
        C = new
        if shift <= tol_abs:
            break
    labels = sq_distances(Z, C, z_sq).argmin(1)
    return C, labels, n_iter


def inverse_distance(Z: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The paper's activation for K-Means and Simple: ``1 / (1 + ||z - c_k||)``."""
    return 1.0 / (1.0 + sq_distances(Z, C).sqrt_())


class DistanceDictionary(ConceptDictionary):
    """Concepts that are points in feature space; activations ``1 / (1 + distance)`` (in ``(0, 1]``)."""

    concepts_are_points = True

    def transform(self, Z: Any) -> torch.Tensor:
        """Activations ``1 / (1 + ||z - u_k||)`` (``N x K``, all positive)."""
        self._check_fitted()
        Z, out = self._input(Z)
        return inverse_distance(Z, self.components_.to(Z.device)).to(out)

    def inverse_transform(self, V: Any) -> torch.Tensor:
        """The concept with the largest activation of each sample (its nearest concept)."""
        self._check_fitted()
        V, out = self._input(V, "activations", n_features=self.n_concepts_)
        return self.components_.to(V.device)[V.argmax(1)].to(out)

    def _nearest_error(self, Z: torch.Tensor) -> float:
        C = self.components_.to(Z.device)
        return relative_error(Z, C[sq_distances(Z, C).argmin(1)])


class KMeans(DistanceDictionary):
    """K-Means concepts: the centroids, with activation ``1 / (1 + distance)`` as in the paper.

    Parameters
    ----------
    n_concepts : int
        Number of clusters ``K``.
    init : {"kmeans++", "random"}
        Greedy k-means++ seeding, or ``K`` random samples.
    max_iter : int
        Maximum Lloyd iterations per run.
    tol : float
        Stop when the centroids move less than ``tol`` times the mean feature variance.
    n_init : int
        Runs from different seedings; the one of least inertia is kept.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    seed : int
        Seed of the ``torch.Generator`` (same seed, same centroids, bit for bit on the CPU).

    Attributes
    ----------
    components_ : (K, D) tensor
        Centroids.
    inertia_ : float
        Sum of squared distances of the samples to their centroid.
    n_iter_, reconstruction_err_ : int, float
        Lloyd iterations of the kept run; relative error of replacing each sample by its centroid.

    Examples
    --------
    >>> import torch
    >>> Z = torch.cat([torch.randn(50, 8) + 5, torch.randn(50, 8) - 5])
    >>> km = KMeans(n_concepts=2).fit(Z)
    >>> km.transform(Z).shape
    torch.Size([100, 2])
    """

    method = "kmeans"
    _fitted_scalars = ConceptDictionary._fitted_scalars + ("inertia_",)

    def __init__(self, n_concepts: int = 20, *, init: str = "kmeans++", max_iter: int = 300, tol: float = 1e-4,
                 n_init: int = 1, device: str = "cpu", seed: int = 0):
        self.n_concepts = check_int("n_concepts", n_concepts)
        self.init = check_choice("init", init, ("kmeans++", "random"))
        self.max_iter = check_int("max_iter", max_iter)
        self.tol = check_float("tol", tol)
        self.n_init = check_int("n_init", n_init)
        self.device = device
        resolve_device(device)
        self.seed = check_int("seed", seed, 0)

    def fit(self, Z: Any) -> KMeans:
        """Cluster the rows of ``Z`` (``N x D``)."""
        Z, _ = self._input(Z, n_features=None)
        check_n_concepts(self.n_concepts, Z.shape[0])
        gen = torch.Generator().manual_seed(self.seed)
        best = None
        for _ in range(self.n_init):
            if self.init == "kmeans++":
                idx = kmeans_plusplus(Z, self.n_concepts, gen)
            else:
                idx = torch.randperm(Z.shape[0], generator=gen)[: self.n_concepts]
            C, labels, n_iter = lloyd(Z, Z[idx.to(Z.device)].clone(), max_iter=self.max_iter, tol=self.tol)
            inertia = float((Z - C[labels]).double().square().sum())
            if best is None or inertia < best[0]:
                best = (inertia, C, n_iter)
        self.inertia_, C, self.n_iter_ = best
        self.components_ = C.cpu()
        self.n_features_in_ = int(Z.shape[1])
        self.reconstruction_err_ = self._nearest_error(Z)
        return self
