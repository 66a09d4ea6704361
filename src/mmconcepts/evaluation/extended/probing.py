"""k-sparse probing on ShapesWorld: can k concepts tell the token object's colour, size and position?

SAEBench's sparse probing, on ShapesWorld's ground truth. The *token object* of a sample is the first object
of its image whose shape is the token (:func:`~mmconcepts.data.truth.token_object`); samples
whose image has none are left out. For each attribute (colour, size, position) and each of its values ``v``
a binary task asks "is the token object's attribute ``v``?" (one value against the others, as SAEBench's
binary tasks); per task:

1. the concept activations and the raw features are standardised on the training samples;
2. the ``k`` *best* concepts are chosen on the TRAINING samples alone, by SAEBench's class-mean separation:
   the largest ``|mean over the positives - mean over the negatives|`` of the standardised activation;
3. a scikit-learn :class:`~sklearn.linear_model.LogisticRegression` (``class_weight="balanced"``, the
   ``liblinear`` solver: single-threaded, 10x faster here than lbfgs under BLAS threads) is fitted
   on those k activations of the training samples and scored on the test samples by **balanced accuracy**
   (the mean of the true-positive and true-negative rates: 0.5 is chance whatever the class balance, 1.0 a
   perfect probe; a value has 1/6 of the samples among six colours, where plain accuracy would give 0.83
   for always saying "no").

An attribute's score is the mean over its tasks. Beside ``top1`` and ``top3`` (``ks``) the same probe reads
the raw features (``raw``: all D dimensions, the ceiling) and ``k`` random directions of the raw feature
space (``random1``, ``random3``: Gaussian directions drawn with ``seed``, nested: the first of the three is the
one; the floor a dictionary must beat).
A task needs at least two training samples on each side and both sides among the test samples.

Examples
--------
Concept 0 fires on red circles, concept 1 is noise; size and position never vary, so they have no task:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> def rows(colours):
...     return [{"attributes": {"objects": [{"shape": "circle", "colour": c, "size": "small",
...                                          "position": "left"}]}} for c in colours]
>>> def codes(colours):
...     return np.stack([[float(c == "red") for c in colours], rng.random(len(colours))], axis=1)
>>> train, test = ["red", "blue"] * 6, ["blue", "red"] * 3
>>> sparse_probing(codes(train), rows(train), codes(test), rows(test), "circle", ks=(1,))
{'probing_top1_colour': 1.0}
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from mmconcepts.errors import MMConceptsError

__all__ = ["PROBED_ATTRIBUTES", "sparse_probing", "token_labels", "top_concepts"]

#: The token object's attributes that are probed (its shape is the token itself).
PROBED_ATTRIBUTES = ("colour", "size", "position")
_MIN_SIDE = 2  # training samples needed on each side of a task
_MAX_ITER = 300


def token_labels(meta: Sequence[dict], token: str, attribute: str) -> list[str | None]:
    """The token object's ``attribute`` of every sample (``None`` when its image has no such object).

    Parameters
    ----------
    meta : list of dict
        Metadata rows carrying ShapesWorld ``attributes`` (``{"objects": [...]}``).
    token : str
        The shape of interest (``"circle"``).
    attribute : str
        ``"colour"``, ``"size"`` or ``"position"``.

    Returns
    -------
    list of str or None

    Examples
    --------
    >>> row = {"attributes": {"objects": [{"shape": "star", "colour": "red"}, {"shape": "circle",
    ...                                                                         "colour": "blue"}]}}
    >>> token_labels([row, {"attributes": {"objects": []}}], "circle", "colour")
    ['blue', None]
    """
    from mmconcepts.data.truth import token_object

    labels = []
    for row in meta:
        record = row.get("attributes") if isinstance(row, dict) else None
        if not isinstance(record, dict):
            raise MMConceptsError("sparse probing needs ShapesWorld ground truth ('attributes' in every metadata "
                                  "row); use features extracted from a ShapesWorld dataset")
        obj = token_object(record.get("objects"), token)
        labels.append(None if obj is None else obj.get(attribute))
    return labels


def top_concepts(codes, positive, k: int) -> list[int]:
    """The ``k`` columns of ``codes`` that best separate the positive samples: SAEBench's class-mean rule.

    Parameters
    ----------
    codes : (N, K) array-like
        Activations (standardise them first so that the columns are comparable).
    positive : (N,) array-like of bool
        The samples of the positive class.
    k : int
        How many columns (at most K).

    Returns
    -------
    list of int
        Column indices, best first (largest ``|mean(positives) - mean(negatives)|``; ties: lower index).

    Examples
    --------
    >>> top_concepts([[0.0, 1.0, 5.0], [0.0, -1.0, 5.0]], [True, False], 2)
    [1, 0]
    """
    import numpy as np

    X = np.asarray(codes, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    gap = np.abs(X[y].mean(axis=0) - X[~y].mean(axis=0))
    return np.argsort(-gap, kind="stable")[: min(int(k), X.shape[1])].tolist()


def _array(x, name: str):
    import numpy as np

    array = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if array.ndim != 2:
        raise MMConceptsError(f"{name} must be an N x K matrix, got shape {array.shape}")
    return array


def _standardise(train, test):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def _probe(X_train, y_train, X_test, y_test) -> float:
    """Balanced test accuracy of a logistic regression fitted on the (standardised) training columns."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(max_iter=_MAX_ITER, class_weight="balanced", solver="liblinear").fit(X_train, y_train)
    return float(balanced_accuracy_score(y_test, probe.predict(X_test)))


def sparse_probing(train_codes, train_meta: Sequence[dict], test_codes, test_meta: Sequence[dict], token: str, *,
                   Z_train=None, Z_test=None, ks: Sequence[int] = (1, 3), seed: int = 0) -> dict:
    """k-sparse probing of the token object's attributes from concept activations (see the module docstring).

    Parameters
    ----------
    train_codes, test_codes : (N_train, K), (N_test, K) array-like or torch.Tensor
        Concept activations of the training and test samples.
    train_meta, test_meta : list of dict
        Their metadata rows, in the same order, with ShapesWorld ``attributes``.
    token : str
        The shape of interest: its first object in each image is the one probed.
    Z_train, Z_test : (N, D) array-like or torch.Tensor, optional
        The raw features of the same samples: adds the ceiling (``raw``) and the floor (``random<k>``).
    ks : sequence of int
        How many concepts each sparse probe reads.
    seed : int
        Seed of the random directions.

    Returns
    -------
    dict
        Flat ``{"probing_top<k>_<attribute>", "probing_raw_<attribute>", "probing_random<k>_<attribute>":
        mean balanced test accuracy}`` for every attribute with at least one task; an attribute without
        one, and ``raw`` / ``random`` without ``Z_train`` and ``Z_test``, are absent.

    Raises
    ------
    MMConceptsError
        When the rows and the metadata disagree, or a row lacks ShapesWorld ground truth.
    """
    import numpy as np

    C_train, C_test = _array(train_codes, "train_codes"), _array(test_codes, "test_codes")
    if len(C_train) != len(train_meta) or len(C_test) != len(test_meta):
        raise MMConceptsError(f"{len(C_train)} / {len(C_test)} activation rows but {len(train_meta)} / "
                              f"{len(test_meta)} metadata rows; pass the activations of the same samples")
    if C_train.shape[1] != C_test.shape[1]:
        raise MMConceptsError(f"train and test activations have {C_train.shape[1]} and {C_test.shape[1]} "
                              "concepts; encode both with the same dictionary")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise MMConceptsError(f"ks must be integers >= 1, got {ks}")
    raw = Z_train is not None and Z_test is not None
    if raw:
        R_train, R_test = _array(Z_train, "Z_train"), _array(Z_test, "Z_test")
        if len(R_train) != len(C_train) or len(R_test) != len(C_test):
            raise MMConceptsError("Z_train / Z_test must hold the features of the same samples as the codes")
        # nested draws: the k directions of a smaller k are the first of a larger one
        drawn = np.random.default_rng(seed).standard_normal((R_train.shape[1], max(ks)))
        directions = {k: drawn[:, :k] for k in ks}
    out = {}
    for attribute in PROBED_ATTRIBUTES:
        y_train = np.array(token_labels(train_meta, token, attribute), dtype=object)
        y_test = np.array(token_labels(test_meta, token, attribute), dtype=object)
        keep_train, keep_test = y_train != None, y_test != None  # noqa: E711 (element-wise)
        if not keep_train.any() or not keep_test.any():
            continue
        y_train, y_test = y_train[keep_train], y_test[keep_test]
        tasks = [v for v in sorted(set(y_train)) if _MIN_SIDE <= (y_train == v).sum() <= len(y_train) - _MIN_SIDE
                 and 0 < (y_test == v).sum() < len(y_test)]
        if not tasks:
            continue
        codes_train, codes_test = _standardise(C_train[keep_train], C_test[keep_test])
        inputs = {}
        if raw:
            inputs["raw"] = _standardise(R_train[keep_train], R_test[keep_test])
            for k in ks:
                inputs[f"random{k}"] = _standardise(R_train[keep_train] @ directions[k],
                                                    R_test[keep_test] @ directions[k])
        scores: dict[str, list[float]] = {}
        for value in tasks:
            pos_train, pos_test = y_train == value, y_test == value
            best = top_concepts(codes_train, pos_train, max(ks))
            for k in ks:
                cols = best[:k]
                scores.setdefault(f"top{k}", []).append(
                    _probe(codes_train[:, cols], pos_train, codes_test[:, cols], pos_test))
            for name, (X_train, X_test) in inputs.items():
                scores.setdefault(name, []).append(_probe(X_train, pos_train, X_test, pos_test))
        for name, values in scores.items():
            out[f"probing_{name}_{attribute}"] = float(np.mean(values))
    return out
