"""Shared base of the concept dictionaries: a scikit-learn estimator over torch tensors.

A concept dictionary factorises features ``Z`` (``N x D``) as ``Z ~ V U``: ``U`` (``components_``,
``K x D``) holds one concept a row, ``V`` (``N x K``) the activations of each sample. Every method
lives in its own module, named in :mod:`~mmconcepts.decompose.registry` under its command-line name. Saving
and loading live in :mod:`~mmconcepts.decompose.persistence`, the input and parameter checks in
:mod:`~mmconcepts.decompose.validation`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import _check_feature_names, check_is_fitted

from mmconcepts.decompose.persistence import load_dictionary, save_dictionary
from mmconcepts.decompose.registry import METHODS
from mmconcepts.decompose.validation import (as_tensor, check_int, check_n_concepts,
                                             code_stats, relative_error, resolve_device)  # noqa: F401 (code_stats)
from mmconcepts.errors import MMConceptsError

__all__ = ["ConceptDictionary", "code_stats", "concept_directions", "load_dictionary", "one_sided", "save_dictionary"]


def one_sided(activations, signed: bool = True):
    """The concept activations of a dictionary's activations ``V`` (``N x K``): ``V`` itself, or, for signed
    activations (:attr:`~ConceptDictionary.signed_activations`, PCA), each side of each component as its own
    non-negative concept, ``[max(V, 0), max(-V, 0)]`` (``N x 2K``: concept ``k`` is component ``k``'s
    positive side, concept ``K + k`` its negative side), so that each side can be read (grounded) on its own.

    Parameters
    ----------
    activations : (N, K) tensor
    signed : bool
        Whether the activations have both signs.

    Returns
    -------
    (N, K) or (N, 2K) float32 tensor
        Non-negative when ``signed``.

    Examples
    --------
    >>> V = torch.tensor([[1.0, -2.0]])
    >>> one_sided(V).tolist(), one_sided(V, signed=False).tolist()
    ([[1.0, 0.0, 0.0, 2.0]], [[1.0, -2.0]])
    """
    A = activations.float()
    return torch.cat([A.clamp(min=0), (-A).clamp(min=0)], dim=1) if signed else A


def concept_directions(components, signed: bool = True):
    """The concepts' directions in the feature space: the components ``U`` (``K x D``), or, for signed
    activations, ``[U; -U]`` (``2K x D``), the directions of the concepts :func:`one_sided` reads, so that
    ``one_sided(V) @ concept_directions(U) == V @ U``.

    Parameters
    ----------
    components : (K, D) tensor
    signed : bool

    Returns
    -------
    (K, D) or (2K, D) float32 tensor

    Examples
    --------
    >>> U, V = torch.eye(2, 3), torch.tensor([[1.0, -2.0]])
    >>> torch.allclose(one_sided(V) @ concept_directions(U), V @ U)
    True
    """
    U = components.float()
    return torch.cat([U, -U]) if signed else U


class ConceptDictionary(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base of every concept dictionary (``Z ~ V U``): a scikit-learn transformer over torch tensors.

    Subclasses set ``method`` (their registry name), store their parameters in ``__init__`` (nothing else),
    check them in ``_check_params`` (called by ``fit``), implement ``fit`` and ``transform``, and list their
    fitted tensors in ``_fitted_tensors`` and fitted scalars in ``_fitted_scalars`` (and their optional online
    state in ``_state_tensors`` / ``_state_scalars``) so that ``save`` and :func:`load_dictionary` round-trip
    them. Fitted tensors are kept on the CPU.

    Inputs may be torch tensors, NumPy arrays or array-likes. Outputs follow the input: a torch tensor in
    gives a float32 torch tensor on the same device back; anything else gives a float32 NumPy array (what
    scikit-learn pipelines expect).

    Attributes
    ----------
    method : str
        Registry name (class attribute): a key of :data:`~mmconcepts.decompose.registry.BUILTIN`, or the
        method spec a class of one's own was loaded under.
    nonnegative_activations : bool
        Class attribute: whether ``transform`` promises activations >= 0.
    signed_activations : bool
        Class attribute: whether activations can be negative, so that each concept has two sides (the
        samples along ``+u_k`` and those along ``-u_k``); True for PCA only. :func:`one_sided` and
        :func:`concept_directions` read such a dictionary as ``2K`` non-negative concepts.
    concepts_are_points : bool
        Class attribute: whether the concepts are points of the feature space (centroids, samples) rather
        than directions added to it; the text grounding decodes a point as it is and a direction on top of
        the mean feature.

    Examples
    --------
    >>> from sklearn.base import clone
    >>> from mmconcepts.decompose import SemiNMF
    >>> clone(SemiNMF(n_concepts=3, l1=0.1)).get_params()["l1"]
    0.1
    """

    method: ClassVar[str] = ""
    nonnegative_activations: ClassVar[bool] = True
    signed_activations: ClassVar[bool] = False
    concepts_are_points: ClassVar[bool] = False
    _nonnegative_input: ClassVar[bool] = False
    _fitted_tensors: ClassVar[tuple[str, ...]] = ("components_",)
    _fitted_scalars: ClassVar[tuple[str, ...]] = ("n_features_in_", "n_iter_", "reconstruction_err_")
    _state_tensors: ClassVar[tuple[str, ...]] = ()
    _state_scalars: ClassVar[tuple[str, ...]] = ()
    #: Fitted scalars a file saved before they existed may lack, with the value that then holds.
    _scalar_defaults: ClassVar[dict[str, object]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("method")
        if name:  # defining a class registers nothing (the registry is explicit), but a taken name is refused
            METHODS.check_free(name, cls)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = self._nonnegative_input
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- parameters and state
    def _check_params(self) -> None:
        """Refuse bad parameters with a one-line MMConceptsError; subclasses extend it."""
        check_int("n_concepts", self.n_concepts)

    @property
    def n_concepts_(self) -> int:
        """Number of fitted concepts (rows of ``components_``); NotFittedError before ``fit``."""
        self._check_fitted()
        return int(self.components_.shape[0])

    @property
    def _n_features_out(self) -> int:
        return self.n_concepts_

    @property
    def _device(self) -> torch.device:
        return resolve_device(getattr(self, "device", "cpu"))

    def _check_fitted(self) -> None:
        check_is_fitted(self, "components_")

    def _clear_fitted(self) -> None:
        """Forget every fitted attribute and the online state (``fit`` starts from scratch)."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("__")]:
            delattr(self, name)
        for name in (*self._state_tensors, *self._state_scalars):
            self.__dict__.pop(name, None)

    def _extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Fitted state beyond ``_fitted_tensors`` / ``_fitted_scalars`` whose names only the fitted
        dictionary knows (a wrapped estimator's attributes, :mod:`~mmconcepts.decompose.custom`): tensors and
        JSON values that ``save`` writes and :meth:`_load_extra_state` restores. None by default."""
        return {}, {}

    def _load_extra_state(self, tensors: dict[str, torch.Tensor], values: dict) -> None:
        """Restore what :meth:`_extra_state` saved (called by :func:`load_dictionary` before
        ``_check_loaded``)."""

    def _has_state(self, what: str) -> bool:
        """Whether the loaded dictionary holds its online state (every name of ``_state_tensors`` and
        ``_state_scalars``); a one-line MMConceptsError naming ``what`` when it holds only part of it."""
        present = [hasattr(self, n) for n in (*self._state_tensors, *self._state_scalars)]
        if any(present) and not all(present):
            raise MMConceptsError(f"the {what} is incomplete")
        return any(present)

    def _check_loaded(self) -> None:
        """Consistency of loaded attributes; subclasses extend it."""
        U = self.components_
        if U.ndim != 2 or U.shape[1] != self.n_features_in_:
            raise MMConceptsError("components_ does not match n_features_in_")

    def _input(self, X: Any, name: str = "Z", *, reset: bool = False, **kw) -> tuple[torch.Tensor, Any]:
        """Checked input on the compute device, and what the result goes back as (a torch device, or
        ``"numpy"`` for inputs that are not torch tensors). ``reset``: the input is the training data."""
        like = X.device if isinstance(X, torch.Tensor) else "numpy"
        if name == "Z":
            _check_feature_names(self, X, reset=reset)
            if not reset and "n_features" not in kw and hasattr(self, "components_"):
                kw["n_features"] = self.n_features_in_
            kw.setdefault("owner", type(self).__name__)
        return as_tensor(X, name, device=self._device, **kw), like

    @staticmethod
    def _output(V: torch.Tensor, like: Any) -> torch.Tensor | np.ndarray:
        """``V`` as float32, back on ``like``'s device (a torch tensor) or as a NumPy array."""
        V = V.detach().to(torch.float32)
        if isinstance(like, str) and like == "numpy":
            return V.cpu().numpy()
        return V.to(like)

    # -- the scikit-learn shape
    def fit(self, Z: Any, y: None = None) -> ConceptDictionary:
        """Learn the concepts of ``Z`` from scratch; subclasses implement it.

        Parameters
        ----------
        Z : (N, D) torch tensor, NumPy array or array-like
        y : ignored

        Returns
        -------
        self
        """
        raise NotImplementedError

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Activations of the checked ``Z`` (float32, on the compute device); subclasses implement it."""
        raise NotImplementedError

    def _fit_input(self, Z: Any, *, one_row_per_concept: bool = True) -> tuple[torch.Tensor, Any]:
        """The start of every ``fit``: the parameters checked, the fitted state forgotten and ``Z`` checked as
        the training data (non-negative where the method needs it, and with at least one sample per concept
        unless ``one_row_per_concept`` is False); returns it with what the result goes back as (:meth:`_input`)."""
        self._check_params()
        self._clear_fitted()
        Z, like = self._input(Z, reset=True, nonnegative=self._nonnegative_input)
        if one_row_per_concept:
            check_n_concepts(self.n_concepts, Z.shape[0])
        return Z, like

    def _continuing(self, Z: Any) -> tuple[bool, torch.Tensor]:
        """The start of every ``partial_fit``: check the parameters, say whether there is a fitted state to
        continue (whose number of concepts must be ``n_concepts``) and check the batch ``Z`` (against the fitted
        features, or as the first training data)."""
        self._check_params()
        fitted = hasattr(self, "components_")
        if fitted and self.components_.shape[0] != self.n_concepts:
            raise MMConceptsError(f"n_concepts is {self.n_concepts} but the dictionary has "
                                  f"{self.components_.shape[0]} concepts: call fit to start again")
        return fitted, self._input(Z, reset=not fitted, nonnegative=self._nonnegative_input)[0]

    def _decode(self, V: torch.Tensor) -> torch.Tensor:
        """Features rebuilt from the checked activations ``V``: ``V @ components_``."""
        return V @ self.components_.to(V.device)

    def transform(self, Z: Any) -> torch.Tensor | np.ndarray:
        """Activations of ``Z`` for the fitted concepts.

        Parameters
        ----------
        Z : (N, D) torch tensor, NumPy array or array-like

        Returns
        -------
        (N, K) float32 torch tensor on ``Z``'s device when ``Z`` is a tensor, else a NumPy array.
        """
        self._check_fitted()
        Z, like = self._input(Z)
        with torch.no_grad():
            return self._output(self._encode(Z), like)

    def fit_transform(self, Z: Any, y: None = None, **fit_params) -> torch.Tensor | np.ndarray:
        """Fit on ``Z`` and return its activations.

        Parameters
        ----------
        Z : (N, D) torch tensor, NumPy array or array-like
        y : ignored
        **fit_params
            Passed to ``fit``.

        Returns
        -------
        (N, K) float32 activations, as :meth:`transform` returns them.
        """
        return self.fit(Z, **fit_params).transform(Z)

    def inverse_transform(self, V: Any) -> torch.Tensor | np.ndarray:
        """Features rebuilt from activations (``V @ components_``, plus what the method adds).

        Parameters
        ----------
        V : (N, K) torch tensor, NumPy array or array-like

        Returns
        -------
        (N, D) float32 features, a torch tensor for a tensor, else a NumPy array.
        """
        self._check_fitted()
        V, like = self._input(V, "activations", n_features=self.n_concepts_)
        return self._output(self._decode(V), like)

    def reconstruction_error(self, Z: Any) -> float:
        """Relative error ``||Z - inverse_transform(transform(Z))|| / ||Z||`` on (new) samples.

        Parameters
        ----------
        Z : (N, D) torch tensor, NumPy array or array-like

        Returns
        -------
        float
        """
        self._check_fitted()
        Z, _ = self._input(Z)
        with torch.no_grad():
            return relative_error(Z, self._decode(self._encode(Z)))

    def score(self, Z: Any, y: None = None) -> float:
        """Negative relative reconstruction error of ``Z``: higher is better, so that ``GridSearchCV``
        works without a scorer.

        Parameters
        ----------
        Z : (N, D) torch tensor, NumPy array or array-like
        y : ignored

        Returns
        -------
        float
            ``-reconstruction_error(Z)``, in ``[-1, 0]`` for a useful dictionary.
        """
        return -self.reconstruction_error(Z)

    # -- persistence
    def save(self, path: str | os.PathLike, provenance: dict | None = None) -> Path:
        """Write the fitted dictionary (and its online state) into the folder ``path``.

        Parameters
        ----------
        path : path
            Folder, created if needed (see :func:`~mmconcepts.decompose.persistence.save_dictionary`).
        provenance : dict or None
            Where it was learnt (layer, token, ...), kept in the safetensors header.

        Returns
        -------
        Path
        """
        return save_dictionary(self, path, provenance)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> ConceptDictionary:
        """Load a saved dictionary; refuses one saved by another method than ``cls``.

        Parameters
        ----------
        path : path
        device : str
            Compute device of the loaded dictionary.

        Returns
        -------
        ConceptDictionary
        """
        model = load_dictionary(path, device=device)
        if cls is not ConceptDictionary and not isinstance(model, cls):
            raise MMConceptsError(f"dictionary at {path} was learnt with {model.method!r}, not {cls.method!r}: "
                                  "use load_dictionary to load any method")
        return model
