"""K-Means concepts (a baseline of the paper): centroids as concepts, activation ``1 / (1 + distance)``.

On the CPU :class:`KMeans` is scikit-learn's ``KMeans`` (k-means++ and Lloyd, ``random_state=seed``): the
same centroids, iterations and inertia as ``sklearn.cluster.KMeans`` with the same seed. On CUDA it runs
the torch :func:`kmeans_plusplus` and :func:`lloyd` below on the GPU, with scikit-learn's rules (greedy
k-means++ with ``2 + log K`` trials; stop when the centroids move by less than ``tol`` times the mean
per-feature variance), so the data never leaves the device.

:func:`kmeans_plusplus` and :func:`lloyd` also seed :class:`~mmconcepts.decompose.semi_nmf.SemiNMF` and
:class:`~mmconcepts.decompose.topk_sae.TopKSAE`: that seeding runs on the compute device, draws from a
``torch.Generator`` (the same seed gives the same concepts, bit for bit on the CPU) and must stay as it is
for Semi-NMF's results to stay reproducible, so it is not delegated to scikit-learn; it is also faster at
the seeding's size (a random projection of 2,000 rows to 128 dimensions, ``K = 20``: 2.5 ms against 8.7 ms
for ``sklearn.cluster.kmeans_plusplus``, 2 shared CPU cores).

The torch Lloyd path is kept for CUDA only (scikit-learn has no GPU path; on the CPU it is slower than
scikit-learn: 0.42 s against 0.28 s for ``Z`` 3,000 x 4,096, ``K = 20``, 15 iterations each,
``benchmarks/decompose.py --kmeans``); its speed on a GPU is measured by the same command with
``--device cuda``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.validation import check_choice, check_float, check_int, relative_error, resolve_device


def sq_distances(Z: torch.Tensor, C: torch.Tensor, z_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``Z`` (``N x D``) and ``C`` (``M x D``): ``N x M``."""
    if z_sq is None:
        z_sq = Z.square().sum(1)
    return (z_sq[:, None] - 2.0 * (Z @ C.t()) + C.square().sum(1)[None, :]).clamp_min_(0.0)


def kmeans_plusplus(Z: torch.Tensor, k: int, generator: torch.Generator,
                    n_local_trials: int | None = None) -> torch.Tensor:
    """Indices of ``k`` rows of ``Z`` chosen by greedy k-means++ (D^2 sampling, best of a few trials).

    Parameters
    ----------
    Z : (N, D) tensor
    k : int
    generator : torch.Generator
        A CPU generator; the sampling happens on the CPU, the distances on ``Z``'s device.
    n_local_trials : int or None
        Candidates per step (default ``2 + log k``, as scikit-learn).

    Returns
    -------
    (k,) int64 tensor
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


def mean_variance(Z: torch.Tensor) -> float:
    """Mean over the features of their variance, ``mean(var(Z, axis=0))`` (scikit-learn's tolerance scale)."""
    return float(Z.double().var(0, correction=0).mean())


def summed_variance(Z: torch.Tensor) -> float:
    """Sum over the features of their unbiased variance (the scale of Semi-NMF's seeding tolerance)."""
    n = Z.shape[0]
    z_sq = Z.square().sum(1)
    return max((float(z_sq.double().sum()) - n * float(Z.mean(0).double().square().sum())) / max(n - 1, 1), 0.0)


def lloyd(Z: torch.Tensor, C: torch.Tensor, *, max_iter: int = 300, tol: float = 1e-4,
          tol_abs: float | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd iterations from centroids ``C``.

    Cluster sums use a one-hot matrix product (deterministic on every device). An empty cluster takes the
    sample farthest from its centroid.

    Parameters
    ----------
    Z : (N, D) tensor
    C : (K, D) tensor
        Initial centroids.
    max_iter : int
    tol : float
        Stop when the centroids move (sum of squared shifts) by at most ``tol * mean(var(Z, axis=0))``,
        scikit-learn's rule.
    tol_abs : float or None
        An absolute threshold instead of ``tol``'s.

    Returns
    -------
    C : (K, D) tensor
    labels : (N,) int64 tensor
    n_iter : int
    """
    K = C.shape[0]
    z_sq = Z.square().sum(1)
    if tol_abs is None:
        tol_abs = tol * mean_variance(Z)
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


def distances(Z: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||z - c||`` between the rows of ``Z`` (``N x D``) and ``C`` (``M x D``), computed
    from the differences (not the expansion ``|z|^2 + |c|^2 - 2 z.c``, which cancels catastrophically in
    float32): a sample equal to a concept is at distance exactly 0, and a row's distances do not depend on
    the other rows of the batch, the BLAS kernel or the thread count."""
    return torch.cdist(Z, C, compute_mode="donot_use_mm_for_euclid_dist")


def inverse_distance(Z: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The paper's activation for K-Means and Simple: ``1 / (1 + ||z - c_k||)`` (:func:`distances`)."""
    return 1.0 / (1.0 + distances(Z, C))


class DistanceDictionary(ConceptDictionary):
    """Concepts that are points in feature space; activations ``1 / (1 + distance)`` (in ``(0, 1]``)."""

    concepts_are_points = True

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Activations ``1 / (1 + ||z - u_k||)`` (``N x K``, all positive)."""
        return inverse_distance(Z, self.components_.to(Z.device))

    def _decode(self, V: torch.Tensor) -> torch.Tensor:
        """The concept with the largest activation of each sample (its nearest concept)."""
        return self.components_.to(V.device)[V.argmax(1)]

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
        Stop when the centroids move less than ``tol`` times the mean per-feature variance (scikit-learn's
        rule: ``tol * mean(var(Z, axis=0))``).
    n_init : int
        Runs from different seedings; the one of least inertia is kept.
    device : str
        ``"cpu"`` (scikit-learn), ``"cuda"``, ``"cuda:N"`` (torch on the GPU) or ``"auto"``.
    seed : int
        ``random_state`` of scikit-learn on the CPU; seed of the ``torch.Generator`` on CUDA.

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
        self.n_concepts = n_concepts
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        check_choice("init", self.init, ("kmeans++", "random"))
        check_int("max_iter", self.max_iter)
        check_float("tol", self.tol)
        check_int("n_init", self.n_init)
        resolve_device(self.device)
        check_int("seed", self.seed, 0)

    def fit(self, Z: Any, y: None = None) -> KMeans:
        """Cluster the rows of ``Z`` (``N x D``); ``y`` is ignored."""
        Z, _ = self._fit_input(Z)
        if Z.device.type == "cpu":
            inertia, C, n_iter = self._fit_sklearn(Z)
        else:
            inertia, C, n_iter = self._fit_torch(Z)
        self.inertia_, self.n_iter_ = float(inertia), int(n_iter)
        self.components_ = C.cpu()
        self.n_features_in_ = int(Z.shape[1])
        self.reconstruction_err_ = self._nearest_error(Z)
        return self

    def _fit_sklearn(self, Z: torch.Tensor) -> tuple[float, torch.Tensor, int]:
        from sklearn.cluster import KMeans as SkKMeans

        km = SkKMeans(n_clusters=int(self.n_concepts), init="k-means++" if self.init == "kmeans++" else "random",
                      n_init=int(self.n_init), max_iter=int(self.max_iter), tol=float(self.tol),
                      random_state=int(self.seed), algorithm="lloyd").fit(Z.numpy())
        C = torch.from_numpy(np.ascontiguousarray(km.cluster_centers_, dtype=np.float32))
        return float(km.inertia_), C, int(km.n_iter_)

    def _fit_torch(self, Z: torch.Tensor) -> tuple[float, torch.Tensor, int]:
        gen = torch.Generator().manual_seed(int(self.seed))
        tol_abs = float(self.tol) * mean_variance(Z)
        best = None
        for _ in range(self.n_init):
            if self.init == "kmeans++":
                idx = kmeans_plusplus(Z, self.n_concepts, gen)
            else:
                idx = torch.randperm(Z.shape[0], generator=gen)[: self.n_concepts]
            C, labels, n_iter = lloyd(Z, Z[idx.to(Z.device)].clone(), max_iter=self.max_iter, tol_abs=tol_abs)
            inertia = float((Z - C[labels]).double().square().sum())
            if best is None or inertia < best[0]:
                best = (inertia, C, n_iter)
        return best
