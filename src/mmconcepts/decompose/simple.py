"""The "Simple" baseline of the paper: the ``K`` samples of largest norm are the concepts.

Activations are ``1 / (1 + distance)`` to each of them, as for K-Means.
"""

from __future__ import annotations

from typing import Any

import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.kmeans import DistanceDictionary
from mmconcepts.decompose.validation import resolve_device
from mmconcepts.errors import MMConceptsError


class Simple(DistanceDictionary):
    """The ``K`` training samples of largest norm as concepts; activation ``1 / (1 + distance)``.

    Parameters
    ----------
    n_concepts : int
        Number of concepts ``K``.
    device : str
        Compute device.

    Attributes
    ----------
    components_ : (K, D) tensor
        The chosen samples, largest norm first (ties: lowest index first).
    indices_ : (K,) int64 tensor
        Their row numbers in the training data.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    >>> Simple(n_concepts=2).fit(Z).indices_
    tensor([1, 2])
    """

    method = "simple"
    _fitted_tensors = ("components_", "indices_")

    def __init__(self, n_concepts: int = 20, *, device: str = "cpu"):
        self.n_concepts = n_concepts
        self.device = device

    def _check_params(self) -> None:
        super()._check_params()
        resolve_device(self.device)

    def fit(self, Z: Any, y: None = None) -> Simple:
        """Pick the ``K`` rows of ``Z`` (``N x D``) of largest Euclidean norm; ``y`` is ignored."""
        Z, _ = self._fit_input(Z)
        norms = torch.linalg.vector_norm(Z, dim=1)
        idx = torch.argsort(norms, descending=True, stable=True)[: self.n_concepts]
        self.components_ = Z[idx].cpu()
        self.indices_ = idx.cpu()
        self.n_features_in_ = int(Z.shape[1])
        self.n_iter_ = 0
        self.reconstruction_err_ = self._nearest_error(Z)
        return self

    def _check_loaded(self) -> None:
        ConceptDictionary._check_loaded(self)
        if self.indices_.shape != (self.n_concepts,) or self.indices_.dtype != torch.int64:
            raise MMConceptsError("indices_ has the wrong shape")
