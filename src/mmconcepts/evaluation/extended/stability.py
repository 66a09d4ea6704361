"""Stability of a dictionary method: does it find the same concepts again?

:func:`matched_cosine` pairs the concepts of two fits one to one (the Hungarian matching of
:func:`scipy.optimize.linear_sum_assignment`, maximising the summed cosine) and returns the mean cosine of
the matched pairs; :func:`stability` fits a method twice from independent initialisations (seeds ``seed``
and ``seed + 1``) on the same features, and once on each of two random halves of them, and reports both
matched cosines.

How concepts are compared
-------------------------
* A direction concept (Semi-NMF, NMF, the sparse autoencoder) is compared by its plain cosine: with
  non-negative activations ``-u`` is another concept than ``u``, so a sign flip is a mismatch.
* A signed dictionary (PCA: ``signed_activations``) is compared by ``|cos|``: a component and its negation
  are the same pair of concepts (``+u_k`` and ``-u_k``), and an SVD may return either sign.
* A point concept (K-Means, Simple: ``concepts_are_points``) is compared as its offset from the mean of
  ``Z``: every point carries the large mean feature of the token position (on the demo the centroids of one
  K-Means fit have a mean pairwise cosine of 0.69 before and -0.05 after), which would make any two sets of
  points look alike.

A deterministic method on the same data (PCA's exact SVD, Simple) gives 1.0 between seeds: that is its true
stability, not a special case. For reference, on the demo's 192-dimensional features with K = 20 a fit
matches as many Gaussian random directions at 0.09 to 0.15 (``|cos|``).

Examples
--------
>>> import numpy as np
>>> matched_cosine(np.eye(3), np.eye(3)[[2, 0, 1]])
1.0
>>> matched_cosine(np.eye(2, 4), -np.eye(2, 4), absolute=True)
1.0
"""

from __future__ import annotations

import inspect

import numpy as np

from mmconcepts.errors import MMConceptsError

__all__ = ["matched_cosine", "stability"]


def _numpy(x) -> np.ndarray:
    """``x`` (a torch tensor on any device, or an array-like) as a float64 NumPy array."""
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)


def _rows(matrix, name: str) -> np.ndarray:
    array = _numpy(matrix)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise MMConceptsError(f"{name} must be a non-empty K x D matrix of concepts, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise MMConceptsError(f"{name} has non-finite entries; fit the dictionary on finite features")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


def matched_cosine(A, B, *, absolute: bool = False) -> float:
    """Mean cosine of the best one-to-one matching between the rows of two concept matrices.

    The ``K1 x K2`` cosines of the rows are matched by the Hungarian algorithm
    (:func:`scipy.optimize.linear_sum_assignment`, maximising the sum), ``min(K1, K2)`` pairs; the result is
    the mean cosine of those pairs. A zero row has cosine 0 with everything.

    Parameters
    ----------
    A, B : array-like or torch.Tensor
        ``K1 x D`` and ``K2 x D`` concepts, one a row (``components_``).
    absolute : bool
        Match and average ``|cos|`` (a concept and its negation are the same: signed dictionaries such as
        PCA); otherwise the signed cosine.

    Returns
    -------
    float
        In [-1, 1] (in [0, 1] with ``absolute``); 1.0 when one set is a permutation of the other (up to signs
        with ``absolute``), 0.0 for mutually orthogonal sets.

    Raises
    ------
    MMConceptsError
        When a matrix is empty, not 2-D or not finite, or the two disagree on ``D``.

    Examples
    --------
    >>> import numpy as np
    >>> matched_cosine(np.eye(2, 4), np.eye(4)[2:])
    0.0
    """
    from scipy.optimize import linear_sum_assignment

    A, B = _rows(A, "A"), _rows(B, "B")
    if A.shape[1] != B.shape[1]:
        raise MMConceptsError(f"the two sets of concepts live in {A.shape[1]} and {B.shape[1]} dimensions; "
                              "compare dictionaries learnt on the same features")
    cosines = A @ B.T
    if absolute:
        cosines = np.abs(cosines)
    rows, cols = linear_sum_assignment(cosines, maximize=True)
    return float(np.clip(cosines[rows, cols].mean(), -1.0, 1.0))


def _method_class(method):
    if isinstance(method, str):  # a registry name, or a spec "package.module:ClassName" of one's own
        from mmconcepts.decompose.registry import method_class

        return method_class(method)
    if not inspect.isclass(method) or not hasattr(method, "fit"):
        raise MMConceptsError(f"method must be a registry name or an estimator class with fit(), got {method!r}")
    return method


def _fit(cls, Z, n_concepts: int, seed: int, params: dict):
    """A fresh ``cls`` fitted on ``Z``: ``n_concepts`` (or scikit-learn's ``n_components`` / ``n_clusters``)
    and ``seed`` (or ``random_state``) set where the class takes them; ``relative_l1`` becomes ``l1`` scaled
    by ``Z``'s mean norm, as :func:`~mmconcepts.decompose.learn` does."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = dict(params)
    relative_l1 = params.pop("relative_l1", None)
    if relative_l1 is not None:
        norm = Z.float().norm(dim=1).mean() if hasattr(Z, "detach") else np.linalg.norm(_numpy(Z), axis=1).mean()
        params["l1"] = float(relative_l1) * float(norm)  # as learn computes it: the same l1, the same fit
    for name in ("seed", "random_state"):
        if name in accepted:
            params[name] = seed
            break
    size = next((n for n in ("n_concepts", "n_components", "n_clusters") if n in accepted), None)
    unknown = set(params) - accepted
    if unknown:
        raise MMConceptsError(f"{cls.__name__} has no parameter {', '.join(sorted(unknown))}; its parameters: "
                              f"{', '.join(sorted(accepted))}")
    model = cls(**{size: n_concepts}, **params) if size else cls(n_concepts, **params)
    model.fit(Z)
    return model


def _concepts(model, cls, mean) -> np.ndarray:
    components = getattr(model, "components_", None)
    if components is None:
        components = getattr(model, "cluster_centers_", None)
    if components is None:
        raise MMConceptsError(f"{cls.__name__} has no components_ after fit; a dictionary method must set "
                              "components_ (K x D)")
    U = _numpy(components)
    return U - mean if getattr(cls, "concepts_are_points", False) else U


def stability(method, Z, n_concepts: int, *, seed: int = 0, fitted=None, halves: bool = True, **params) -> dict:
    """How reproducible a method's concepts are: matched cosine across seeds and across halves of the data.

    Parameters
    ----------
    method : str or class
        A name of :data:`mmconcepts.decompose.METHODS` (``"semi-nmf"``, ``"pca"``, ...), a method spec
        ``"package.module:ClassName"`` (:mod:`mmconcepts.decompose.custom`) or an estimator class
        with ``fit`` and ``components_`` (``K x D``); its size parameter is ``n_concepts`` (or scikit-learn's
        ``n_components`` / ``n_clusters``, else the first positional one), its seed ``seed`` (or
        ``random_state``) when it takes one.
    Z : (N, D) torch.Tensor or array-like
        The training features (N >= 2 * n_concepts for the halves).
    n_concepts : int
        Number of concepts ``K`` of every fit (PCA: components, not its 2K one-sided concepts).
    seed : int
        The first fit's seed; the second uses ``seed + 1``. The halves are drawn with ``seed`` and both
        fitted with ``seed``, so they differ by their data only.
    fitted : estimator, optional
        A dictionary of this method already fitted on all of ``Z`` with ``seed`` (a concepts folder's): used
        as the first fit instead of fitting it again.
    halves : bool
        Also fit the two halves (``stability_halves``); ``False`` when there are too few samples for them.
    **params
        Further parameters of the method (``max_iter=...``, ``l1=...``); ``relative_l1=r`` sets ``l1 = r *``
        the mean norm of the rows each fit sees, as ``learn`` does.

    Returns
    -------
    dict
        ``{"stability": matched cosine of the fits with seeds seed and seed + 1 on all of Z,
        "stability_halves": matched cosine of the fits on two disjoint random halves (with ``halves``)}``
        (see the module docstring for how concepts are compared).

    Raises
    ------
    MMConceptsError
        For an unknown method or parameter, or when a half has fewer rows than ``n_concepts``.

    Examples
    --------
    >>> import torch
    >>> Z = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    >>> round(stability("pca", Z, 3, solver="full")["stability"], 6)     # PCA is deterministic
    1.0
    """
    import torch

    cls = _method_class(method)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MMConceptsError(f"seed must be an integer >= 0, got {seed!r}")
    N = len(Z)
    if halves and N // 2 < n_concepts:
        raise MMConceptsError(f"stability needs at least {2 * n_concepts} samples for {n_concepts} concepts "
                              f"on each half, got {N}; extract more features or lower the number of concepts")
    mean = _numpy(Z).mean(axis=0)
    absolute = bool(getattr(cls, "signed_activations", False))
    first = fitted if fitted is not None else _fit(cls, Z, n_concepts, seed, params)
    second = _fit(cls, Z, n_concepts, seed + 1, params)
    result = {"stability": matched_cosine(_concepts(first, cls, mean), _concepts(second, cls, mean),
                                          absolute=absolute)}
    if not halves:
        return result
    order = np.random.default_rng(seed).permutation(N)
    parts = [order[: N // 2], order[N // 2: 2 * (N // 2)]]
    if isinstance(Z, torch.Tensor):
        a, b = (_fit(cls, Z[torch.as_tensor(idx, device=Z.device)], n_concepts, seed, params) for idx in parts)
    else:
        a, b = (_fit(cls, np.asarray(Z)[idx], n_concepts, seed, params) for idx in parts)
    result["stability_halves"] = matched_cosine(_concepts(a, cls, mean), _concepts(b, cls, mean),
                                                absolute=absolute)
    return result
