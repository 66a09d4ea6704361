"""Bring your own method: a dictionary class named ``"package.module:ClassName"`` joins the registry.

Wherever a method name is accepted (:func:`~mmconcepts.decompose.learn`, ``mmconcepts benchmark
--methods``, :func:`~mmconcepts.decompose.load_dictionary` reading a saved folder), a *method spec*
``"package.module:ClassName"`` names a class of your own. :func:`load_method` imports it and registers it in
:data:`~mmconcepts.decompose.METHODS` under the spec, so it is learnt, saved, loaded, grounded and evaluated
like the built-in methods. The class is either

- a :class:`~mmconcepts.decompose.ConceptDictionary` subclass (it follows that base's contract; its
  registered copy is a subclass whose ``method`` is the spec, so a saved folder names the spec), or
- any class with scikit-learn's shape: a constructor that takes the number of concepts as ``n_concepts`` or
  ``n_components`` (and a seed as ``seed`` or ``random_state``, if it has one); ``fit(X)`` on an ``N x D``
  float32 NumPy array, setting ``components_`` (``K x D``, one concept a row); ``transform(X)`` -> ``N x K``
  activations (``inverse_transform`` is used for the reconstruction error when present). Optional class
  attributes ``signed_activations`` (activations of both signs: each concept read on both sides, as PCA)
  and ``concepts_are_points`` (components are points of the feature space, as centroids). It is wrapped
  in a :class:`CustomDictionary`, which saves the fitted estimator without pickling: every public fitted
  attribute (name ending in ``_``) that is a NumPy array goes to the safetensors file, every JSON value
  (number, string, bool, None, lists of them) to ``dictionary.json``; loading constructs the class with the
  saved parameters and sets them back, which is all scikit-learn's ``transform`` methods need. An attribute
  of any other type is refused with a one-line error.

Examples
--------
scikit-learn's truncated SVD as a method: fitted on torch tensors, saved without pickling, loaded by name.

>>> import torch
>>> from mmconcepts.decompose import load_dictionary
>>> cls = load_method("sklearn.decomposition:TruncatedSVD")
>>> cls.method
'sklearn.decomposition:TruncatedSVD'
>>> Z = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
>>> svd = cls(3, seed=0).fit(Z)
>>> svd.components_.shape, svd.transform(Z).shape
(torch.Size([3, 8]), torch.Size([100, 3]))
>>> svd.save("svd")
PosixPath('svd')
>>> load_dictionary("svd")
Custom[sklearn.decomposition:TruncatedSVD](n_concepts=3)
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, ClassVar

import numpy as np
import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.registry import METHODS, is_method_spec
from mmconcepts.decompose.validation import check_int, relative_error
from mmconcepts.errors import MMConceptsError

__all__ = ["CustomDictionary", "load_method"]

#: Constructor parameters that take the number of concepts, and the seed, in the order they are looked for.
SIZE_PARAMS = ("n_concepts", "n_components")
SEED_PARAMS = ("seed", "random_state")


def _import(spec: str):
    module_name, _, class_path = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = "" if exc.name == module_name else f" (it needs {exc.name!r})"
        raise MMConceptsError(f"cannot import module {module_name!r} of method {spec!r}{where}: install it or add "
                              "its folder to PYTHONPATH") from None
    except MMConceptsError:
        raise
    except Exception as exc:  # the user's module failed while importing: say so on one line
        raise MMConceptsError(f"importing module {module_name!r} of method {spec!r} failed: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    target = module
    for part in class_path.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise MMConceptsError(f"module {module_name!r} has no class {class_path!r}: check the name after "
                                  f"the colon in {spec!r}")
    if not inspect.isclass(target):
        raise MMConceptsError(f"{spec!r} is a {type(target).__name__}, not a class: name a dictionary class")
    return target


def load_method(spec: str) -> type[ConceptDictionary]:
    """Import the class a method spec names and register it in :data:`~mmconcepts.decompose.METHODS`.

    Parameters
    ----------
    spec : str
        ``"package.module:ClassName"``.

    Returns
    -------
    type
        The registered class (``method == spec``): a subclass of the user's
        :class:`~mmconcepts.decompose.ConceptDictionary`, or a :class:`CustomDictionary` around a
        scikit-learn-style estimator. Loading the same spec again returns the same class.
    """
    if not is_method_spec(spec):
        raise MMConceptsError(f"{spec!r} is not a method spec: write package.module:ClassName")
    if spec in METHODS:
        return METHODS[spec]
    target = _import(spec)
    if issubclass(target, ConceptDictionary):
        cls = type(target.__name__, (target,), {"method": spec, "__module__": target.__module__,
                                                "__qualname__": target.__qualname__, "__doc__": target.__doc__})
    else:
        cls = _wrapped(spec, target)
    METHODS[spec] = cls
    return cls


def _wrapped(spec: str, target: type) -> type[CustomDictionary]:
    """A :class:`CustomDictionary` subclass around a scikit-learn-style class, checked for that shape."""
    missing = [name for name in ("fit", "transform") if not callable(getattr(target, name, None))]
    if missing:
        raise MMConceptsError(f"{spec!r} has no {' and no '.join(missing)} method: a dictionary needs "
                              "fit(X), transform(X) and, once fitted, components_ (K x D)")
    parameters = inspect.signature(target.__init__).parameters
    if not any(name in parameters for name in SIZE_PARAMS):
        raise MMConceptsError(f"{spec!r} takes neither n_concepts nor n_components: its constructor must take "
                              "the number of concepts under one of these names")
    flags = {name: bool(getattr(target, name, False)) for name in ("signed_activations", "concepts_are_points")}
    return type(f"Custom[{spec}]", (CustomDictionary,), {
        "method": spec, "estimator_class": target, "nonnegative_activations": False,
        "__module__": __name__, "__qualname__": f"CustomDictionary[{spec}]", **flags})


def _json_value(value):
    """``value`` as JSON (numbers, strings, bools, None, lists of them), or ``None`` with ``False`` when not."""
    if value is None or isinstance(value, (bool, str)):
        return value, True
    if isinstance(value, (int, np.integer)):
        return int(value), True
    if isinstance(value, (float, np.floating)):
        return (float(value), True) if math.isfinite(value) else (None, False)
    if isinstance(value, (list, tuple)):
        items = [_json_value(v) for v in value]
        return [v for v, _ in items], all(ok for _, ok in items)
    return None, False


class CustomDictionary(ConceptDictionary):
    """A scikit-learn-style estimator (``fit`` / ``transform`` / ``components_``) as a concept dictionary.

    :func:`load_method` makes one subclass per spec, with ``estimator_class`` set; this base is never used
    directly.

    Parameters
    ----------
    n_concepts : int
        Number of concepts, passed to the estimator as ``n_concepts`` or ``n_components``.
    seed : int
        Passed as ``seed`` or ``random_state`` when the estimator takes one.
    params : dict or None
        Further constructor parameters of the estimator (JSON values).

    Attributes
    ----------
    estimator_ : object
        The fitted estimator.
    components_ : (K, D) tensor
        Its ``components_``, float32.
    """

    estimator_class: ClassVar[type | None] = None

    def __init__(self, n_concepts: int = 20, *, seed: int = 0, params: dict | None = None):
        self.n_concepts = n_concepts
        self.seed = seed
        self.params = params

    def _check_params(self) -> None:
        super()._check_params()
        check_int("seed", self.seed, low=0)
        if self.params is not None:
            if not isinstance(self.params, dict) or not all(isinstance(k, str) for k in self.params):
                raise MMConceptsError(f"params of {self.method} must be a dict of constructor parameters")
            if not _json_value(list(self.params.values()))[1]:
                raise MMConceptsError(f"params of {self.method} must be JSON values (numbers, strings, lists)")

    def _make(self):
        """A new, unfitted estimator with these parameters."""
        cls = self.estimator_class
        parameters = inspect.signature(cls.__init__).parameters
        kwargs = dict(self.params or {})
        kwargs[next(name for name in SIZE_PARAMS if name in parameters)] = self.n_concepts
        seed = next((name for name in SEED_PARAMS if name in parameters), None)
        if seed is not None:
            kwargs[seed] = self.seed
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(set(kwargs) - set(parameters)) if not takes_any else []
        if unknown:
            raise MMConceptsError(f"{self.method} has no parameter {', '.join(unknown)}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise MMConceptsError(f"cannot construct {self.method}: {exc}") from None

    def _activations(self, X: np.ndarray, n_samples: int) -> torch.Tensor:
        V = np.asarray(self.estimator_.transform(X), dtype=np.float32)
        K = self.components_.shape[0]
        if V.shape != (n_samples, K):
            raise MMConceptsError(f"{self.method}.transform returned shape {V.shape}, expected ({n_samples}, {K}): "
                                  "one activation per sample and concept")
        if not np.isfinite(V).all():
            raise MMConceptsError(f"{self.method}.transform returned NaN or infinite activations")
        return torch.from_numpy(np.ascontiguousarray(V))

    def fit(self, Z: Any, y: None = None) -> CustomDictionary:
        """Fit the wrapped estimator on ``Z`` (``N x D``: a torch tensor, NumPy array or array-like, given to it
        as float32 NumPy); ``y`` is ignored. Returns ``self``."""
        Z, _ = self._fit_input(Z)
        X = Z.detach().cpu().numpy()
        estimator = self._make()
        estimator.fit(X)
        U = getattr(estimator, "components_", None)
        if U is None:
            raise MMConceptsError(f"{self.method}.fit set no components_: a dictionary sets components_ "
                                  "(K x D, one concept a row) when fitted")
        U = np.asarray(U, dtype=np.float32)
        if U.ndim != 2 or U.shape[1] != X.shape[1] or U.shape[0] < 1 or not np.isfinite(U).all():
            raise MMConceptsError(f"{self.method}.components_ has shape {U.shape}, expected (K, {X.shape[1]}) "
                                  "with finite values")
        self.estimator_ = estimator
        self.components_ = torch.from_numpy(U.copy())  # not the estimator's memory
        self.n_features_in_ = int(X.shape[1])
        V = self._activations(X, X.shape[0])
        self.reconstruction_err_ = relative_error(Z.cpu(), self._decode(V))
        n_iter = getattr(estimator, "n_iter_", 0)
        self.n_iter_ = int(np.max(n_iter)) if np.size(n_iter) else 0
        return self

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        return self._activations(Z.detach().cpu().numpy(), Z.shape[0]).to(Z.device)

    def _decode(self, V: torch.Tensor) -> torch.Tensor:
        if callable(getattr(self.estimator_, "inverse_transform", None)):
            Z = np.asarray(self.estimator_.inverse_transform(V.detach().cpu().numpy()), dtype=np.float32)
            return torch.from_numpy(np.ascontiguousarray(Z)).to(V.device)
        return super()._decode(V)

    def _extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        self._check_fitted()
        tensors, values = {}, {}
        for name, value in vars(self.estimator_).items():
            if not name.endswith("_") or name.startswith("_"):
                continue  # scikit-learn's convention: public names ending in "_" are the fitted state
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                tensors[name] = torch.from_numpy(np.array(value, copy=True, order="C"))
                continue
            converted, ok = _json_value(value)
            if not ok:
                raise MMConceptsError(f"cannot save {self.method}: its fitted attribute {name} is a "
                                      f"{type(value).__name__}; keep fitted state in NumPy arrays, numbers or "
                                      "strings (no pickles)")
            values[name] = converted
        return tensors, values

    def _load_extra_state(self, tensors: dict[str, torch.Tensor], values: dict) -> None:
        estimator = self._make()
        for name, t in tensors.items():
            setattr(estimator, name, t.numpy())
        for name, value in values.items():
            setattr(estimator, name, value)
        self.estimator_ = estimator

    def _check_loaded(self) -> None:
        super()._check_loaded()
        if not hasattr(self, "estimator_"):
            raise MMConceptsError(f"the saved {self.method} has no estimator state")
