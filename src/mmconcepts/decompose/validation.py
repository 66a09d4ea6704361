"""Checks of the concept dictionaries' inputs and parameters, and the metrics they share.

Every check raises :class:`~mmconcepts.errors.MMConceptsError` (a ``ValueError``) with a one-line message;
the messages also carry the phrases scikit-learn's estimator checks look for (``"Complex data not
supported"``, ``"0 feature(s) (shape=(12, 0)) while a minimum of 1 is required"``, ``"X has 3 features, but
SemiNMF is expecting 4 features as input"``, ...), so the dictionaries pass those checks as they are.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from mmconcepts.errors import MMConceptsError


class NonNumericMatrixError(MMConceptsError, TypeError):
    """A matrix whose entries are not numbers (e.g. an object array holding a dict): also a ``TypeError``,
    as NumPy and scikit-learn raise for it."""


# ------------------------------------------------------------------------------------------ parameters
def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device named by ``device`` (:func:`mmconcepts.devices.resolve_device`).

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` or None: CUDA when present, else the CPU; any other name is checked to exist here.

    Returns
    -------
    torch.device
    """
    from mmconcepts.devices import resolve_device as resolve

    return resolve(device)


def check_int(name: str, value: Any, low: int = 1, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is an integer ``>= low`` (or None when ``optional``).

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : object
    low : int
    optional : bool

    Raises
    ------
    MMConceptsError
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise MMConceptsError(f"{name} must be an integer >= {low}, got {value!r}")


def check_float(name: str, value: Any, low: float = 0.0, *, strict: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number ``>= low`` (``> low`` when ``strict``).

    Parameters
    ----------
    name : str
    value : object
    low : float
    strict : bool

    Raises
    ------
    MMConceptsError
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        op = ">" if strict else ">="
        raise MMConceptsError(f"{name} must be a finite number {op} {low}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """Refuse ``value`` unless it is True or False.

    Raises
    ------
    MMConceptsError
    """
    if not isinstance(value, (bool, np.bool_)):
        raise MMConceptsError(f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Refuse ``value`` unless it is one of the strings ``choices``.

    Raises
    ------
    MMConceptsError
    """
    if not isinstance(value, str) or value not in choices:
        raise MMConceptsError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


# ---------------------------------------------------------------------------------------------- inputs
def _to_numpy(X: Any, name: str) -> np.ndarray:
    try:
        A = np.asarray(X)
    except (TypeError, ValueError):
        raise MMConceptsError(f"{name} must be a 2-D numeric matrix (samples x features), got "
                              f"{type(X).__name__}") from None
    if A.dtype.kind == "O":
        try:
            A = A.astype(np.float64)
        except TypeError as exc:
            raise NonNumericMatrixError(f"{name} must be a 2-D numeric matrix: {exc}") from None
        except ValueError:
            raise MMConceptsError(f"{name} must be a 2-D numeric matrix (samples x features), got entries "
                                  "that are not numbers") from None
    if A.dtype.kind == "c":
        raise MMConceptsError(f"Complex data not supported: {name} must hold real numbers, got dtype {A.dtype}")
    if A.dtype.kind == "b":
        raise MMConceptsError(f"{name} must hold real numbers, got dtype bool")
    if A.dtype.kind not in "iuf":
        raise MMConceptsError(f"{name} must be a 2-D numeric matrix (samples x features), got "
                              f"{type(X).__name__} of dtype {A.dtype}")
    return A


def as_tensor(X: Any, name: str = "Z", *, n_features: int | None = None, device: torch.device | None = None,
              nonnegative: bool = False, owner: str | None = None) -> torch.Tensor:
    """``X`` as a finite, non-empty, 2-D float32 tensor on ``device``, or a one-line MMConceptsError.

    Parameters
    ----------
    X : torch.Tensor, numpy array or array-like (list of lists, DataFrame, ...)
        The matrix. Torch tensors are used as they are (no copy when already float32 on ``device``);
        other inputs are converted (copied when the array is read-only).
    name : str
        How the messages name the matrix.
    n_features : int or None
        Required number of columns.
    device : torch.device or None
        Where the result goes (None: the tensor's own device; CPU for other inputs).
    nonnegative : bool
        Refuse negative entries.
    owner : str or None
        Class name of the estimator, to word the messages as scikit-learn does.

    Returns
    -------
    torch.Tensor
        ``N x D`` float32.
    """
    import scipy.sparse

    if scipy.sparse.issparse(X):
        raise MMConceptsError(f"{name} is a sparse matrix but dense features are needed: pass {name}.toarray()")
    if isinstance(X, torch.Tensor):
        T = X.detach()
        if T.is_complex():
            raise MMConceptsError(f"Complex data not supported: {name} must hold real numbers, got dtype "
                                  f"{T.dtype}")
        if T.dtype == torch.bool:
            raise MMConceptsError(f"{name} must hold real numbers, got dtype {T.dtype}")
        shape = tuple(T.shape)
    else:
        A = _to_numpy(X, name)
        shape = A.shape
    if len(shape) != 2:
        hint = (f": Reshape your data with {name}.reshape(1, -1) for one sample or {name}.reshape(-1, 1) for one "
                "feature" if len(shape) == 1 else "")
        raise MMConceptsError(f"{name} must be a 2-D matrix (samples x features), got shape {shape}{hint}")
    if shape[0] == 0 or shape[1] == 0:
        what = f"0 sample(s) (shape={shape})" if shape[0] == 0 else f"0 feature(s) (shape={shape})"
        raise MMConceptsError(f"{name} is empty: it has {what} while a minimum of 1 is required; check the "
                              "feature store and layer")
    if n_features is not None and shape[1] != n_features:
        also = (f" (X has {shape[1]} features, but {owner} is expecting {n_features} features as input)"
                if owner else "")
        raise MMConceptsError(f"{name} has {shape[1]} columns but the dictionary expects {n_features}: use "
                              f"features from the same model and layer as the dictionary{also}")
    if not isinstance(X, torch.Tensor):
        A = np.ascontiguousarray(A, dtype=np.float32)
        if not A.flags.writeable:
            A = A.copy()
        T = torch.from_numpy(A)
    T = T.to(device=device if device is not None else T.device, dtype=torch.float32)
    # one fast reduction: a NaN or inf anywhere makes the sum non-finite (an overflowing sum falls through
    # to the exact element-wise check)
    if not bool(torch.isfinite(T.sum(dtype=torch.float32))) and not bool(torch.isfinite(T).all()):
        finite = torch.isfinite(T)
        n_nan = int(torch.isnan(T).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise MMConceptsError(f"{name} contains {n_nan} NaN and {n_inf} infinite values: drop those samples "
                              "or extract the features again")
    if nonnegative and float(T.amin()) < 0:
        raise MMConceptsError(f"Negative values in data passed to {owner or 'this method'}: {name} has "
                              "negative entries but this method needs non-negative features; use semi-nmf "
                              "instead")
    return T


def check_n_concepts(n_concepts: int, n_samples: int) -> None:
    """Refuse more concepts than samples.

    Raises
    ------
    MMConceptsError
        Naming "only 1 samples" and the like (scikit-learn's checks look for "1 sample").
    """
    if n_concepts > n_samples:
        raise MMConceptsError(f"{n_concepts} concepts asked for but only {n_samples} samples: use at most "
                              f"{n_samples} concepts or extract more samples")


# --------------------------------------------------------------------------------------------- metrics
def relative_error(Z: torch.Tensor, Z_hat: torch.Tensor) -> float:
    """``||Z - Z_hat||_F / ||Z||_F`` accumulated in float64.

    Parameters
    ----------
    Z, Z_hat : (N, D) tensors

    Returns
    -------
    float
    """
    num = (Z - Z_hat).double().square().sum()
    den = Z.double().square().sum().clamp_min(1e-300)
    return float((num / den).sqrt())


def code_stats(V: torch.Tensor) -> dict[str, float]:
    """Sparsity of activations ``V`` (``N x K``).

    Returns
    -------
    dict
        ``exact_zeros`` (fraction == 0), ``sparsity`` (fraction <= 1% of the sample's largest |activation|),
        ``active_per_sample`` (mean count above 10% of the sample's largest |activation|).
    """
    V = V.detach().float()
    top = V.abs().amax(dim=1, keepdim=True)
    return {
        "exact_zeros": float((V == 0).float().mean()),
        "sparsity": float((V.abs() <= 0.01 * top).float().mean()),
        "active_per_sample": float((V.abs() > 0.1 * top).float().sum(1).mean()),
    }
