"""Model-free metrics of a concept dictionary: word overlap and the ShapesWorld ground-truth metrics.

* :func:`overlap` / :func:`overlap_matrix`: how much the grounded word sets of the concepts repeat each other
  (the CoX-LMM disentanglement score, lower is better).
* :func:`grounding_precision`: on ShapesWorld every image carries its true attributes, so the words of the
  concepts that explain a test image can be checked: the share of them that are true of that image.
* :func:`coverage` / :func:`purity`: do the concepts single out attribute values of the training images
  (every one of a concept's most activating images has, say, a red object)?

Only the object attributes of :data:`mmconcepts.data.shapesworld.ATTRIBUTES` (shape, colour, size, position)
count; the background is not described by the captions and a background word counts as not true. Words are
compared lower-cased and stripped. Heavy imports (torch) happen inside the functions that need them.

Examples
--------
>>> overlap([{"red", "circle"}, {"blue", "circle"}])
0.5
>>> sorted(true_words({"objects": [{"shape": "star", "colour": "red", "size": "large", "position": "top"}]}))
['big', 'large', 'red', 'star', 'top']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mmconcepts.data.shapesworld import ATTRIBUTES, COLOURS, POSITIONS, SHAPES, SIZES, attribute_words
from mmconcepts.errors import MMConceptsError

if TYPE_CHECKING:
    import torch

__all__ = [
    "attribute_vocabulary",
    "coverage",
    "grounding_precision",
    "overlap",
    "overlap_matrix",
    "purity",
    "true_words",
]

_VALUES = {"shape": tuple(SHAPES), "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS)}


# ----------------------------------------------------------------------------------------------- overlap


def _word_sets(word_sets: Iterable[Iterable[str]]) -> list[set[str]]:
    if isinstance(word_sets, (str, bytes)):
        raise MMConceptsError("overlap needs one collection of words per concept, got a single string")
    sets = [{ws} if isinstance(ws, str) else set(ws) for ws in word_sets]
    if not sets:
        raise MMConceptsError("overlap needs at least one concept's words, got none; ground the concepts first")
    return sets


def overlap_matrix(word_sets: Iterable[Iterable[str]]) -> list[list[float]]:
    """Pairwise word overlap of the concepts: entry ``[k][l]`` is ``|T_l ∩ T_k| / |T_k|``.

    The diagonal is 1.0 (for display) except for a concept without words, whose whole row is 0.0.
    The matrix is not symmetric: row ``k`` is normalised by the size of ``T_k``.

    Parameters
    ----------
    word_sets : list of set of str
        ``T_k``, the grounded words of each of the K concepts.

    Returns
    -------
    list of list of float
        K x K nested lists (JSON ready).

    Examples
    --------
    >>> overlap_matrix([{"a", "b"}, {"b"}])
    [[1.0, 0.5], [1.0, 1.0]]
    """
    sets = _word_sets(word_sets)
    matrix = []
    for k, tk in enumerate(sets):
        row = []
        for l, tl in enumerate(sets):
            if not tk:
                row.append(0.0)
            elif k == l:
                row.append(1.0)
            else:
                row.append(len(tl & tk) / len(tk))
        matrix.append(row)
    return matrix


def overlap(word_sets: Iterable[Iterable[str]]) -> float:
    """Mean word overlap between concepts (CoX-LMM disentanglement; lower is better).

    ``(1/K) sum_k (1/(K-1)) sum_{l != k} |T_l ∩ T_k| / |T_k|``; a concept without words contributes 0 and
    a single concept gives 0.0.

    Parameters
    ----------
    word_sets : list of set of str
        ``T_k``, the grounded words of each of the K concepts (lists are turned into sets).

    Returns
    -------
    float
        In [0, 1]: 0 when no two concepts share a word, 1 when all word sets are equal.

    Raises
    ------
    MMConceptsError
        When there are no concepts at all.

    Examples
    --------
    >>> overlap([{"a", "b"}, {"b", "c"}, {"d"}])
    0.16666666666666666
    """
    matrix = overlap_matrix(word_sets)
    K = len(matrix)
    if K == 1:
        return 0.0
    total = sum(sum(v for l, v in enumerate(row) if l != k) / (K - 1) for k, row in enumerate(matrix))
    return total / K


# ------------------------------------------------------------------------------- ShapesWorld ground truth


def _norm(word: str) -> str:
    return str(word).strip().lower()


def attribute_vocabulary() -> dict[str, tuple[str, str]]:
    """Every word that names a ShapesWorld object attribute value, synonyms included.

    Returns
    -------
    dict
        ``word -> (attribute, value)``, e.g. ``"big" -> ("size", "large")``, ``"little" -> ("size",
        "small")``.

    Examples
    --------
    >>> attribute_vocabulary()["big"]
    ('size', 'large')
    """
    vocab: dict[str, tuple[str, str]] = {}
    for attribute in ATTRIBUTES:
        for value in _VALUES[attribute]:
            for word in attribute_words(value):
                vocab[word] = (attribute, value)
    return vocab


def _objects(record: dict) -> list[dict]:
    if not isinstance(record, dict) or not isinstance(record.get("objects"), list):
        raise MMConceptsError("a ShapesWorld attribute record needs an 'objects' list; use features extracted "
                              "from a ShapesWorld dataset (its metadata rows carry 'attributes')")
    return record["objects"]


def _values(record: dict) -> set[tuple[str, str]]:
    """The ``(attribute, value)`` pairs that some object of the image has."""
    return {(a, obj[a]) for obj in _objects(record) for a in ATTRIBUTES if obj.get(a) is not None}


def true_words(attributes: dict) -> set[str]:
    """All words that are true of an image: each object's shape, colour, size and position, with synonyms.

    Parameters
    ----------
    attributes : dict
        The image's ground-truth record ``{"background": ..., "objects": [{"shape", "colour", "size",
        "position", ...}, ...]}``.

    Returns
    -------
    set of str

    Examples
    --------
    >>> sorted(true_words({"objects": [{"shape": "circle", "colour": "red", "size": "small",
    ...                                 "position": "bottom"}]}))
    ['bottom', 'circle', 'little', 'red', 'small']
    """
    return {word for _, value in _values(attributes) for word in attribute_words(value)}


def grounding_precision(concept_words: Sequence[Sequence[str]], test_attributes: Sequence[dict],
                        top_concepts: Sequence[Sequence[int]]) -> float:
    """Share of the words explaining a test image that are true of it, averaged over the images.

    For image ``i`` the explanation is the distinct words of the concepts ``top_concepts[i]`` (top-1 or
    top-3); a word counts as right when it is in :func:`true_words` of the image. Words that name no attribute
    (``"picture"``) or a background colour count as wrong. An image whose concepts have no words is skipped.

    Parameters
    ----------
    concept_words : list of list of str
        The grounded words of each of the K concepts.
    test_attributes : list of dict
        The ground-truth record of each test image.
    top_concepts : list of list of int
        For each test image, the indices of its most activated concepts.

    Returns
    -------
    float
        The mean precision, or nan when no image has any words.

    Examples
    --------
    >>> record = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
    >>> grounding_precision([["red", "blue"], ["star"]], [record], [[0]])
    0.5
    """
    if len(test_attributes) != len(top_concepts):
        raise MMConceptsError(f"{len(test_attributes)} attribute records but {len(top_concepts)} rows of top "
                              "concepts; pass one row of concept indices per test image")
    if not test_attributes:
        raise MMConceptsError("no test images to compute grounding precision on; pass a non-empty test set")
    K = len(concept_words)
    precisions = []
    for record, row in zip(test_attributes, top_concepts):
        words: list[str] = []
        for k in row:
            k = int(k)
            if not -K <= k < K:
                raise MMConceptsError(f"concept index {k} is out of range for {K} concepts; pass indices of "
                                      "the grounded concepts")
            words.extend(_norm(w) for w in concept_words[k])
        words = list(dict.fromkeys(w for w in words if w))
        if not words:
            continue
        truth = true_words(record)
        precisions.append(sum(w in truth for w in words) / len(words))
    return sum(precisions) / len(precisions) if precisions else math.nan


def _parse_exclude(exclude: Iterable) -> set[tuple[str, str]]:
    vocab = attribute_vocabulary()
    out = set()
    for item in exclude:
        if isinstance(item, tuple):
            out.add((str(item[0]), str(item[1])))
        elif "=" in item:
            attribute, value = item.split("=", 1)
            out.add((attribute.strip(), value.strip()))
        elif _norm(item) in vocab:
            out.add(vocab[_norm(item)])
    return out


def _top_images(activations, train_attributes: Sequence[dict], n_top: int):
    """Indices (n x K) of each concept's ``n`` most activating images, ``n = min(n_top, N)``; value sets."""
    import torch

    A = torch.as_tensor(activations)
    if A.ndim != 2:
        raise MMConceptsError(f"activations must be an N x K matrix, got shape {tuple(A.shape)}")
    N, K = A.shape
    if N != len(train_attributes):
        raise MMConceptsError(f"{N} activation rows but {len(train_attributes)} attribute records; pass the "
                              "training activations with the metadata of the same samples")
    if N == 0 or K == 0:
        raise MMConceptsError(f"activations of shape {tuple(A.shape)} are empty; learn concepts on some samples")
    if n_top < 1:
        raise MMConceptsError(f"n_top must be at least 1, got {n_top}")
    n = min(int(n_top), N)
    top = A.float().topk(n, dim=0).indices.T.tolist()  # K lists of n image indices
    values = [_values(r) for r in train_attributes]
    return top, values, n


def coverage(activations: torch.Tensor, train_attributes: Sequence[dict], n_top: int = 5,
             exclude: Iterable = ()) -> dict:
    """Share of the attribute values of the training images that some concept owns.

    A concept *owns* ``(attribute, value)`` when every one of its ``n_top`` most activating training images
    has an object with that value (images hold up to 3 objects). Only values that at least ``n_top`` images
    have are considered (no concept could own the others). Use ``exclude`` to leave out the values that the
    token of interest fixes (with token ``"circle"`` every concept trivially owns ``shape=circle``).

    Parameters
    ----------
    activations : torch.Tensor
        N x K activations of the training images.
    train_attributes : list of dict
        The ground-truth record of each training image, in the same order.
    n_top : int
        How many top images define a concept (``min(n_top, N)`` when there are fewer images).
    exclude : iterable
        Values to leave out: ``"shape=circle"``, ``("shape", "circle")`` or an attribute word (``"circle"``,
        ``"big"``); words that name no attribute are ignored.

    Returns
    -------
    dict
        ``{"coverage": share owned (nan when no value qualifies), "owned": {"colour=red": [k, ...], ...}
        (every considered value, an empty list when none owns it), "n_values": number considered,
        "n_top": the n used}``.

    Examples
    --------
    >>> import torch
    >>> red = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
    >>> blue = {"objects": [{"shape": "star", "colour": "blue", "size": "small", "position": "left"}]}
    >>> coverage(torch.tensor([[1.0], [0.0]]), [red, blue], n_top=1, exclude=["star"])["owned"]["colour=red"]
    [0]
    """
    top, values, n = _top_images(activations, train_attributes, n_top)
    skip = _parse_exclude(exclude)
    counts = Counter(v for vs in values for v in vs)
    considered = sorted(v for v, c in counts.items() if c >= n and v not in skip)
    owned: dict[str, list[int]] = {f"{a}={v}": [] for a, v in considered}
    for k, images in enumerate(top):
        common = set.intersection(*(values[i] for i in images))
        for a, v in considered:
            if (a, v) in common:
                owned[f"{a}={v}"].append(k)
    n_owned = sum(bool(ks) for ks in owned.values())
    return {"coverage": n_owned / len(considered) if considered else math.nan, "owned": owned,
            "n_values": len(considered), "n_top": n}


def purity(activations: torch.Tensor, train_attributes: Sequence[dict], n_top: int = 5,
           exclude: Iterable = ()) -> float:
    """How much each concept's top images agree on one attribute value, averaged over the concepts.

    For concept ``k``: the largest share of its ``n_top`` most activating training images that have an object
    with one same value (of any attribute). ``exclude`` leaves out values as in :func:`coverage`.

    Parameters
    ----------
    activations : torch.Tensor
        N x K activations of the training images.
    train_attributes : list of dict
        The ground-truth record of each training image, in the same order.
    n_top : int
        How many top images define a concept (``min(n_top, N)`` when there are fewer images).
    exclude : iterable
        Values to leave out, as in :func:`coverage`.

    Returns
    -------
    float
        In [0, 1]; 1 when every concept's top images share some value.

    Examples
    --------
    >>> import torch
    >>> red = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
    >>> blue = {"objects": [{"shape": "circle", "colour": "blue", "size": "large", "position": "top"}]}
    >>> purity(torch.tensor([[1.0], [0.5]]), [red, blue], n_top=2)
    0.5
    """
    top, values, n = _top_images(activations, train_attributes, n_top)
    skip = _parse_exclude(exclude)
    shares = []
    for images in top:
        counts = Counter(v for i in images for v in values[i] if v not in skip)
        shares.append(max(counts.values(), default=0) / n)
    return sum(shares) / len(shares)
