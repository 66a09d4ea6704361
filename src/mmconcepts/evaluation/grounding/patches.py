"""The ShapesWorld ground-truth metrics of image-token concepts: do a concept's patches lie on what it means?

A concepts folder learnt on image-token rows (``extract --positions image``) explains patches. On ShapesWorld
each row carries ``object``, the object under the patch's centre (``null`` on the background;
:mod:`mmconcepts.extract.image_rows`), so a patch has the true values of one object or none:

* a concept's **value** (:func:`patch_values`): the object attribute value ``(attribute, value)`` that most of
  its ``n_top`` most activating training patches lie on, with that share;
* **patch precision** (:func:`patch_precision`): that share, averaged over the concepts (a patch off every
  object counts against it): the concept's top patches lie on objects having its value;
* **patch coverage** (:func:`patch_coverage`): the share of the attribute values with at least ``n_top`` patches
  that are the value of some concept with a share of at least ``min_share``;
* **pointing** (:func:`pointing`): for each test image, its top concept (by its patches' activations pooled as
  the concepts folder says, max or mean: :mod:`mmconcepts.concepts.pooling`) and that concept's peak patch on
  the image: a hit when the patch lies on an object having the concept's value. The share of hits over the test
  images.

The same metrics for random directions (:func:`random_direction_scores`, the features less their training mean
projected on Gaussian directions, averaged over draws) say what the data alone give: a patch's state varies most
with the colour under it, so a random direction's top patches already share a colour more often than chance.

Examples
--------
>>> import torch
>>> red = {"shape": "star", "colour": "red", "size": "small", "position": "left"}
>>> meta = [{"index": 0, "patch": 0, "object": red}, {"index": 0, "patch": 1, "object": None}]
>>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
>>> patch_values(A, meta, n_top=1)[0]
(('shape', 'star'), 1.0)
>>> patch_precision(A, meta, n_top=1), pointing(patch_values(A, meta, n_top=1), A, meta)
(0.5, 1.0)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from mmconcepts.concepts.pooling import POOLS
from mmconcepts.data.shapesworld import ATTRIBUTES
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.rows import Row

__all__ = ["PatchScores", "has_patch_truth", "patch_coverage", "patch_precision", "patch_scores", "patch_values",
           "pointing", "random_direction_scores"]

#: How many of a concept's most activating training patches define its value.
N_TOP = 20
#: The share of its top patches a concept's value needs for the value to count as covered.
MIN_SHARE = 0.5
#: Random directions drawn for the baseline (their scores averaged).
N_DRAWS = 5


@dataclass(frozen=True, eq=False)
class PatchScores(Row):
    """The patch metrics of one set of concepts (or random directions) for a row of ``metrics.json``.

    Examples
    --------
    >>> PatchScores(patch_precision=0.5, pointing=1.0).to_json()
    {'patch_precision': 0.5, 'pointing': 1.0}
    """

    patch_precision: float | None = None
    patch_coverage: float | None = None
    pointing: float | None = None


def has_patch_truth(meta: list[dict]) -> bool:
    """Whether every row is an image-token row with ShapesWorld's ``object`` field."""
    return bool(meta) and all("patch" in m and "object" in m for m in meta)


def _values_of(obj) -> list[tuple[str, str]]:
    """The object's values in the order of :data:`~mmconcepts.data.shapesworld.ATTRIBUTES` (ties between
    values break in that order)."""
    if not isinstance(obj, dict):
        return []
    return [(a, str(obj[a])) for a in ATTRIBUTES if a in obj]


def _check(activations, meta: list[dict]) -> None:
    if activations.ndim != 2 or activations.shape[0] != len(meta):
        raise MMConceptsError(f"activations of shape {tuple(activations.shape)} for {len(meta)} patch rows; pass the "
                              "activations of the same rows as the metadata")
    if not has_patch_truth(meta):
        raise MMConceptsError("the rows carry no patch ground truth ('patch' and 'object'); use image-token "
                              "features (extract --positions image) of a ShapesWorld dataset")


def _top(activations, n: int) -> list[list[int]]:
    from mmconcepts.concepts.activations import is_sparse, top_rows

    if is_sparse(activations):
        return [[row for row, _ in rows] for rows in top_rows(activations, n)]
    values, indices = activations.float().topk(n, dim=0)
    return [[r for r, v in zip(rows, vs) if v > 0] for rows, vs in zip(indices.T.tolist(), values.T.tolist())]


def patch_values(activations, meta: list[dict], n_top: int = N_TOP) -> list[tuple[tuple[str, str] | None, float]]:
    """Each concept's value and its share: the ``(attribute, value)`` most of its ``n_top`` most activating
    patches lie on (``None`` when none lies on an object), and the share of the ``n_top`` that do (a concept
    active on fewer patches counts the missing ones against it; only active patches, above 0, are its own)."""
    _check(activations, meta)
    n = min(int(n_top), len(meta))
    out = []
    for rows in _top(activations, n):
        counts = Counter(v for r in rows for v in _values_of(meta[r].get("object")))
        if not counts:
            out.append((None, 0.0))
            continue
        value, count = counts.most_common(1)[0]
        out.append((value, count / n))
    return out


def patch_precision(activations, meta: list[dict], n_top: int = N_TOP) -> float:
    """The mean over the concepts of the share of their top patches lying on an object having their value."""
    values = patch_values(activations, meta, n_top)
    return sum(share for _, share in values) / len(values)


def patch_coverage(values: list[tuple], meta: list[dict], n_top: int = N_TOP, min_share: float = MIN_SHARE) -> float:
    """The share of the attribute values (those at least ``n_top`` patches lie on) that are the value of some
    concept with a share of at least ``min_share``; ``nan`` when no value qualifies."""
    counts = Counter(v for m in meta for v in _values_of(m.get("object")))
    considered = {v for v, c in counts.items() if c >= n_top}
    owned = {value for value, share in values if value in considered and share >= min_share}
    return len(owned) / len(considered) if considered else math.nan


def pointing(values: list[tuple], test_activations, test_meta: list[dict], pool: str = POOLS[0]) -> float:
    """The share of test images on which the top concept (its patches' activations pooled by ``pool``) has its
    peak patch on an object having its value."""
    import torch

    from mmconcepts.concepts.pooling import image_groups, pooled_activations

    _check(test_activations, test_meta)
    if len(values) != test_activations.shape[1]:
        raise MMConceptsError(f"{len(values)} concept values for {test_activations.shape[1]} concepts")
    groups = image_groups(test_meta)
    top = pooled_activations(test_activations, groups, pool).argmax(dim=1).tolist()
    hits = []
    for rows, k in zip(groups, top):
        column = torch.stack([_entry(test_activations, r, k) for r in rows])
        peak = rows[int(column.argmax())]
        value = values[k][0]
        hits.append(value is not None and value in _values_of(test_meta[peak].get("object")))
    return sum(hits) / len(hits)


def _entry(A, row: int, k: int):
    from mmconcepts.concepts.activations import is_sparse

    return A[row].to_dense()[k].float() if is_sparse(A) else A[row, k].float()


def patch_scores(train_activations, train_meta: list[dict], test_activations, test_meta: list[dict],
                 n_top: int = N_TOP, pool: str = POOLS[0]) -> PatchScores:
    """Patch precision and coverage on the training patches, pointing on the test images (an image's top
    concept by its patches' ``pool``)."""
    values = patch_values(train_activations, train_meta, n_top)
    return PatchScores(patch_precision=round(sum(s for _, s in values) / len(values), 4),
                       patch_coverage=_rounded(patch_coverage(values, train_meta, n_top)),
                       pointing=round(pointing(values, test_activations, test_meta, pool), 4))


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def random_direction_scores(Z_train, train_meta: list[dict], Z_test, test_meta: list[dict], n_concepts: int,
                            seed: int = 0, n_draws: int = N_DRAWS, n_top: int = N_TOP,
                            pool: str = POOLS[0]) -> PatchScores:
    """:func:`patch_scores` of ``n_concepts`` Gaussian directions on the features less their training mean,
    averaged over ``n_draws`` draws (seeded: the same seed gives the same scores).

    ``Z_train`` is an ``N x D`` tensor or a function returning an iterator of its row chunks (a store read shard by
    shard, :func:`~mmconcepts.extract.features.iter_feature_shards`): it is read twice, for the mean and for the
    projections, and only ``N x (n_draws K)`` projections are held, never the features of millions of patches."""
    import torch

    chunks = (lambda: iter([Z_train])) if isinstance(Z_train, torch.Tensor) else Z_train
    total, count = None, 0
    for chunk in chunks():
        chunk = torch.as_tensor(chunk).float()
        total = chunk.sum(0) if total is None else total + chunk.sum(0)
        count += chunk.shape[0]
    if not count:
        raise MMConceptsError("no training features to draw random directions against")
    centre = total / count
    draws = [torch.randn(centre.shape[0], n_concepts, generator=torch.Generator().manual_seed(int(seed) * 1000 + d))
             for d in range(n_draws)]
    R = torch.cat(draws, dim=1)
    train = torch.cat([(torch.as_tensor(c).float() - centre) @ R for c in chunks()])
    test = (torch.as_tensor(Z_test).float() - centre) @ R
    rows = [patch_scores(train[:, d * n_concepts:(d + 1) * n_concepts], train_meta,
                         test[:, d * n_concepts:(d + 1) * n_concepts], test_meta, n_top, pool)
            for d in range(n_draws)]

    def average(name):
        kept = [getattr(r, name) for r in rows if getattr(r, name) is not None]
        return round(sum(kept) / len(kept), 4) if kept else None

    return PatchScores(**{name: average(name) for name in ("patch_precision", "patch_coverage", "pointing")})
