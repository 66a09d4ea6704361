"""The ShapesWorld ground-truth metrics of a concept dictionary: are the concepts' words true of the images?

* :func:`grounding_precision`: on ShapesWorld every image carries its true attributes, so the words of the
  concepts that explain a test image can be checked: the share of them that are true of that image (``strict``:
  a concept without words among them counts as one wrong word);
* :func:`coverage` / :func:`purity`: do the concepts single out attribute values of the training images
  (every one of a concept's most activating images has, say, a red object)?

The truth itself (which words are true of an image) is :mod:`mmconcepts.data.truth`: only the object attributes
(shape, colour, size, position) count, a background word counts as not true, and words are compared lower-cased
and stripped. The word-set metrics that need no truth (overlap, words per concept) are
:mod:`mmconcepts.evaluation.grounding.overlap`. Heavy imports (torch) happen inside the functions that need them.

Examples
--------
>>> record = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
>>> grounding_precision([["red", "blue"], []], [record, record], [[0], [1]])
0.5
>>> grounding_precision([["red", "blue"], []], [record, record], [[0], [1]], strict=True)
0.25
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mmconcepts.data.truth import attribute_vocabulary, normalise, true_values, true_words
from mmconcepts.errors import MMConceptsError

if TYPE_CHECKING:
    import torch

__all__ = ["coverage", "grounding_precision", "purity"]


def grounding_precision(concept_words: Sequence[Sequence[str]], test_attributes: Sequence[dict],
                        top_concepts: Sequence[Sequence[int]], *, strict: bool = False) -> float:
    """Share of the words explaining a test image that are true of it, averaged over the images.

    For image ``i`` the explanation is the distinct words of the concepts ``top_concepts[i]`` (top-1 or
    top-3); a word counts as right when it is in :func:`~mmconcepts.data.truth.true_words` of the image. Words
    that name no attribute (``"picture"``) or a background colour count as wrong.

    A concept without words is a loophole: a dictionary whose concepts say nothing would score well. Plainly
    (``strict=False``) an image whose concepts have no words at all is skipped; with ``strict=True`` every
    concept without words among an image's (distinct) top concepts counts as one wrong word, so an image
    explained by an empty concept alone has precision 0 and no image is skipped. Both agree when no concept is
    empty.

    Parameters
    ----------
    concept_words : list of list of str
        The grounded words of each of the K concepts.
    test_attributes : list of dict
        The ground-truth record of each test image.
    top_concepts : list of list of int
        For each test image, the indices of its most activated concepts.
    strict : bool
        Count an empty concept as a wrong word instead of skipping images without words.

    Returns
    -------
    float
        The mean precision, in [0, 1]; nan when no image is counted (plain precision, no image has words).

    Raises
    ------
    MMConceptsError
        When the rows disagree, there are no test images, or an index is out of range.

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
    own = [list(dict.fromkeys(w for w in map(normalise, words) if w)) for words in concept_words]
    precisions = []
    for record, row in zip(test_attributes, top_concepts):
        concepts = list(dict.fromkeys(int(k) for k in row))
        for k in concepts:
            if not -K <= k < K:
                raise MMConceptsError(f"concept index {k} is out of range for {K} concepts; pass indices of "
                                      "the grounded concepts")
        words = list(dict.fromkeys(w for k in concepts for w in own[k]))
        empty = sum(not own[k] for k in concepts) if strict else 0
        if not words and not strict:
            continue
        truth = true_words(record)
        denominator = len(words) + empty
        precisions.append(sum(w in truth for w in words) / denominator if denominator else 0.0)
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
        elif normalise(item) in vocab:
            out.add(vocab[normalise(item)])
    return out


def _top_images(activations, train_attributes: Sequence[dict], n_top: int
                ) -> tuple[list[list[int]], list[set[tuple[str, str]]], int]:
    """``(top, values, n)``: each concept's ``n`` most activating images (K lists of n indices; in the sparse
    form of a large dictionary, :mod:`mmconcepts.concepts.activations`, among its active images only, so
    possibly fewer), each image's true ``(attribute, value)`` pairs, and ``n = min(n_top, N)``."""
    import torch

    from mmconcepts.concepts.activations import is_sparse, top_rows

    A = activations if is_sparse(activations) else torch.as_tensor(activations)
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
    if is_sparse(A):  # never densified: a 100k-latent dictionary's N x K does not fit
        top = [[row for row, _ in rows] for rows in top_rows(A, n)]
    else:
        top = A.float().topk(n, dim=0).indices.T.tolist()  # K lists of n image indices
    values = [true_values(r) for r in train_attributes]
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
        common = set.intersection(*(values[i] for i in images)) if len(images) == n else set()
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
    activations, train_attributes, n_top, exclude
        As in :func:`coverage`.

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
