"""The reference solver: scikit-learn ``DictionaryLearning`` with positive codes, as the CoX-LMM code runs it.

Kept for comparisons (``benchmarks/decompose.py``); it runs on the CPU only and is slow on large inputs
(the reference uses up to 5,000 iterations). It minimises the same objective as
``SemiNMF(l1=alpha)``: ``0.5 ||Z - V U||^2 + alpha ||V||_1``, ``V >= 0``, ``||u_k|| <= 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.validation import check_choice, check_float, check_int, relative_error


class ReferenceDL(ConceptDictionary):
    """Thin wrapper of ``sklearn.decomposition.DictionaryLearning(positive_code=True)``.

    Parameters
    ----------
    n_concepts : int
        Number of atoms ``K``.
    l1 : float
        ``alpha`` of scikit-learn (the reference uses 1.0); also used to encode new samples.
    max_iter, tol : int, float
        As scikit-learn (the reference: ``max_iter=5000``).
    fit_algorithm : {"cd", "lars"}
        Sparse coding during the fit (the reference: ``"cd"``).
    transform_algorithm : {"lasso_cd", "lasso_lars"}
        Encoding of new samples (the reference: ``"lasso_cd"``).
    seed : int
        ``random_state``.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(60, 3) @ torch.randn(3, 10)
    >>> ReferenceDL(n_concepts=3, l1=0.01, max_iter=20).fit(Z).components_.shape
    torch.Size([3, 10])
    """

    method = "reference-dl"

    def __init__(self, n_concepts: int = 20, *, l1: float = 1.0, max_iter: int = 5000, tol: float = 1e-8,
                 fit_algorithm: str = "cd", transform_algorithm: str = "lasso_cd", seed: int = 0):
        self.n_concepts = n_concepts
        self.l1 = l1
        self.max_iter = max_iter
        self.tol = tol
        self.fit_algorithm = fit_algorithm
        self.transform_algorithm = transform_algorithm
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        check_float("l1", self.l1, strict=True)
        check_int("max_iter", self.max_iter)
        check_float("tol", self.tol)
        check_choice("fit_algorithm", self.fit_algorithm, ("cd", "lars"))
        check_choice("transform_algorithm", self.transform_algorithm, ("lasso_cd", "lasso_lars"))
        check_int("seed", self.seed, 0)

    def fit(self, Z: Any, y: None = None, *, callback=None) -> ReferenceDL:
        """Run scikit-learn's solver on ``Z`` (``N x D``); ``y`` is ignored; ``callback`` is passed to it
        (called every 5 iterations)."""
        from sklearn.decomposition import DictionaryLearning

        Z, _ = self._fit_input(Z)
        X = Z.cpu().double().numpy()  # float64: scikit-learn's float32 lasso fails when D < K (1.9)
        dl = DictionaryLearning(n_components=int(self.n_concepts), alpha=self.l1, max_iter=self.max_iter,
                                tol=self.tol,
                                fit_algorithm=self.fit_algorithm, transform_algorithm=self.transform_algorithm,
                                transform_alpha=self.l1, positive_code=True, random_state=self.seed,
                                callback=callback)
        codes = dl.fit_transform(X)
        self.components_ = torch.from_numpy(np.ascontiguousarray(dl.components_, dtype=np.float32))
        self.n_iter_ = int(dl.n_iter_)
        self.n_features_in_ = int(Z.shape[1])
        self.reconstruction_err_ = relative_error(Z.cpu(), torch.from_numpy(codes.astype(np.float32)) @
                                                  self.components_)
        return self

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Positive lasso codes of ``Z`` by scikit-learn's ``sparse_encode``."""
        from sklearn.decomposition import sparse_encode

        codes = sparse_encode(Z.cpu().double().numpy(), self.components_.double().numpy(),
                              algorithm=self.transform_algorithm, alpha=self.l1, positive=True)
        return torch.from_numpy(codes.astype(np.float32))
