"""PCA concepts (a baseline of the paper): the top principal directions, signed activations.

Exact SVD for small problems, else a seeded randomised SVD (Halko et al., 2011) in torch, so the same seed
gives the same components. Signs are fixed so that each component's largest-magnitude entry is positive.
"""

from __future__ import annotations

from typing import Any

import torch

from mmconcepts.decompose.base import (ConceptDictionary, check_choice, check_int, relative_error,
                                       resolve_device)
from mmconcepts.errors import MMConceptsError


def _randomized_svd(X: torch.Tensor, k: int, n_iter: int, gen: torch.Generator, oversample: int = 10):
    """Top-``k`` right singular vectors and values of ``X`` by randomised range finding."""
    r = min(k + oversample, min(X.shape))
    omega = torch.randn(X.shape[1], r, generator=gen).to(X.device)
    Q = torch.linalg.qr(X @ omega).Q
    for _ in range(n_iter):
        Q = torch.linalg.qr(X.t() @ Q).Q
        Q = torch.linalg.qr(X @ Q).Q
    _, S, Vh = torch.linalg.svd(Q.t() @ X, full_matrices=False)
    return S[:k], Vh[:k]


class PCA(ConceptDictionary):
    """Principal components as concepts; activations are the (signed) projections.

    Parameters
    ----------
    n_concepts : int
        Number of components ``K`` (at most ``min(N, D)``).
    center : bool
        Subtract the mean before the decomposition (``mean_``), added back by ``inverse_transform``.
    solver : {"auto", "full", "randomized"}
        ``auto`` uses the randomised SVD when ``K`` is small next to ``min(N, D)``.
    n_power_iter : int
        Power iterations of the randomised SVD.
    device, seed : str, int
        Compute device; seed of the randomised SVD.

    Attributes
    ----------
    components_ : (K, D) tensor
        Orthonormal principal directions.
    mean_ : (D,) tensor
        Feature mean (zeros when ``center=False``).
    explained_variance_ : (K,) tensor
        Variance along each component.

    Examples
    --------
    >>> import torch
    >>> Z = torch.randn(100, 3) @ torch.randn(3, 16)
    >>> pca = PCA(n_concepts=3).fit(Z)
    >>> round(pca.reconstruction_err_, 4)
    0.0
    """

    method = "pca"
    nonnegative_activations = False
    _fitted_tensors = ("components_", "mean_", "explained_variance_")

    def __init__(self, n_concepts: int = 20, *, center: bool = True, solver: str = "auto", n_power_iter: int = 4,
                 device: str = "cpu", seed: int = 0):
        self.n_concepts = check_int("n_concepts", n_concepts)
        if not isinstance(center, bool):
            raise MMConceptsError(f"center must be true or false, got {center!r}")
        self.center = center
        self.solver = check_choice("solver", solver, ("auto", "full", "randomized"))
        self.n_power_iter = check_int("n_power_iter", n_power_iter, 0)
        self.device = device
        resolve_device(device)
        self.seed = check_int("seed", seed, 0)

    def fit(self, Z: Any) -> PCA:
        """Find the ``K`` principal directions of ``Z`` (``N x D``)."""
        Z, _ = self._input(Z, n_features=None)
        N, D = Z.shape
        if self.n_concepts > min(N, D):
            raise MMConceptsError(f"PCA gives at most min(samples, features) = {min(N, D)} components, "
                                  f"{self.n_concepts} asked for: use fewer concepts")
        mean = Z.mean(0) if self.center else torch.zeros(D, device=Z.device)
        X = Z - mean
        solver = self.solver
        if solver == "auto":
            solver = "randomized" if self.n_concepts < 0.8 * min(N, D) and min(N, D) > 500 else "full"
        if solver == "full":
            _, S, Vh = torch.linalg.svd(X, full_matrices=False)
            S, Vh = S[: self.n_concepts], Vh[: self.n_concepts]
            self.n_iter_ = 0
        else:
            gen = torch.Generator().manual_seed(self.seed)
            S, Vh = _randomized_svd(X, self.n_concepts, self.n_power_iter, gen)
            self.n_iter_ = self.n_power_iter
        rows = torch.arange(Vh.shape[0], device=Vh.device)
        signs = torch.sign(Vh[rows, Vh.abs().argmax(1)])
        Vh = Vh * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        self.components_ = Vh.contiguous().cpu()
        self.mean_ = mean.cpu()
        self.explained_variance_ = (S.square() / max(N - 1, 1)).cpu()
        self.n_features_in_ = int(D)
        self.reconstruction_err_ = relative_error(Z, (X @ Vh.t()) @ Vh + mean)
        return self

    def transform(self, Z: Any) -> torch.Tensor:
        """Projections ``(Z - mean_) @ components_.T`` (``N x K``, signed)."""
        self._check_fitted()
        Z, out = self._input(Z)
        return ((Z - self.mean_.to(Z.device)) @ self.components_.to(Z.device).t()).to(out)

    def inverse_transform(self, V: Any) -> torch.Tensor:
        """``V @ components_ + mean_``."""
        return super().inverse_transform(V) + self.mean_.to(V.device if isinstance(V, torch.Tensor) else "cpu")

    def _check_loaded(self) -> None:
        super()._check_loaded()
        if self.mean_.shape != (self.n_features_in_,) or self.explained_variance_.shape != (self.n_concepts,):
            raise MMConceptsError("mean_ or explained_variance_ has the wrong shape")
