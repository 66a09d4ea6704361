"""PCA concepts (a baseline of the paper): the top principal directions, signed activations.

Exact SVD (``torch.linalg.svd``) for small problems, else torch's randomised SVD (``torch.svd_lowrank``,
Halko et al., 2011) drawn from a generator seeded with ``seed``, so the same seed gives the same components.
Signs are fixed so that each component's largest-magnitude entry is positive.

PCA activations are signed: a concept has two sides, the samples along ``+u_k`` (positive activation) and
those along ``-u_k`` (negative). :attr:`PCA.signed_activations` is True so that the grounding can read both;
:func:`~mmconcepts.decompose.base.one_sided` and :func:`~mmconcepts.decompose.base.concept_directions` read
the dictionary as ``2K`` non-negative concepts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.validation import (check_bool, check_choice, check_int, relative_error,
                                             resolve_device)
from mmconcepts.errors import MMConceptsError


@contextmanager
def _seeded(device: torch.device, seed: int):
    """Draws from torch's default generator of ``device`` start from ``seed``; its state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)
        yield


def _randomized_svd(X: torch.Tensor, k: int, n_iter: int, seed: int, oversample: int = 10):
    """Top-``k`` singular values and right singular vectors (rows) of ``X`` by ``torch.svd_lowrank``."""
    q = min(k + oversample, min(X.shape))
    with _seeded(X.device, seed):
        _, S, V = torch.svd_lowrank(X, q=q, niter=n_iter)
    return S[:k], V[:, :k].t()


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
    signed_activations = True
    _fitted_tensors = ("components_", "mean_", "explained_variance_")

    def __init__(self, n_concepts: int = 20, *, center: bool = True, solver: str = "auto", n_power_iter: int = 4,
                 device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.center = center
        self.solver = solver
        self.n_power_iter = n_power_iter
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        check_bool("center", self.center)
        check_choice("solver", self.solver, ("auto", "full", "randomized"))
        check_int("n_power_iter", self.n_power_iter, 0)
        resolve_device(self.device)
        check_int("seed", self.seed, 0)

    def fit(self, Z: Any, y: None = None) -> PCA:
        """Find the ``K`` principal directions of ``Z`` (``N x D``); ``y`` is ignored."""
        Z, _ = self._fit_input(Z, one_row_per_concept=False)  # PCA's own bound follows
        N, D = Z.shape
        if self.n_concepts > min(N, D):
            raise MMConceptsError(f"PCA gives at most min(samples, features) = {min(N, D)} components "
                                  f"({N} sample(s), {D} feature(s)), {self.n_concepts} asked for: use fewer "
                                  "concepts")
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
            S, Vh = _randomized_svd(X, self.n_concepts, self.n_power_iter, int(self.seed))
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

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Projections ``(Z - mean_) @ components_.T`` (``N x K``, signed)."""
        return (Z - self.mean_.to(Z.device)) @ self.components_.to(Z.device).t()

    def _decode(self, V: torch.Tensor) -> torch.Tensor:
        """``V @ components_ + mean_``."""
        return super()._decode(V) + self.mean_.to(V.device)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        if self.mean_.shape != (self.n_features_in_,) or self.explained_variance_.shape != (self.n_concepts,):
            raise MMConceptsError("mean_ or explained_variance_ has the wrong shape")
