"""Image-token rows (``extract --positions image``) seen per image: which rows are one image, and its pooled
activations.

A store of image-token rows holds one row per (kept image, image token) with its ``patch`` index
(:mod:`mmconcepts.extract.image_rows`). The concepts of such a store explain a patch; an image's explanation
pools its patches' activations, and a concept's map on the image is its own activation per patch
(:func:`patch_grid`), no gradient needed. Two poolings (:data:`POOLS`; a concepts folder records its own,
``learn --pool``):

* ``"max"`` (the default): a concept's strongest patch: the concept is in the image if it is anywhere in it,
  however small the object it lies on;
* ``"mean"``: a concept's share of the image, whatever the number of patches; on images where most patches
  are background it ranks the background's concepts first.

Examples
--------
>>> import torch
>>> meta = [{"index": 0, "token": "red", "patch": p} for p in range(2)] + [{"index": 1, "token": "red", "patch": 0}]
>>> groups = image_groups(meta)
>>> A = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
>>> groups, pooled_activations(A, groups, "mean").tolist(), pooled_activations(A, groups, "max").tolist()
([[0, 1], [2]], [[2.0, 1.0], [0.0, 5.0]], [[3.0, 2.0], [0.0, 5.0]])
"""

from __future__ import annotations

import math

from mmconcepts.decompose.settings import POOLS
from mmconcepts.errors import MMConceptsError

__all__ = ["POOLS", "check_pool", "image_groups", "image_meta", "is_image_rows", "n_images", "patch_grid", "per_image",
           "pooled_activations"]

#: The metadata of an image-token row that describe the patch, not the image.
PATCH_FIELDS = ("patch", "box", "object")


def check_pool(how: str) -> str:
    """``how`` if it is one of :data:`POOLS`, else a one-line error."""
    if how not in POOLS:
        raise MMConceptsError(f"unknown pooling {how!r}: choose {' or '.join(POOLS)}")
    return how


def is_image_rows(meta: list[dict]) -> bool:
    """Whether the metadata rows are image-token rows (every one has a ``patch``)."""
    return bool(meta) and all("patch" in m for m in meta)


def image_groups(meta: list[dict]) -> list[list[int]]:
    """The row indices of each image (same dataset ``index`` and token), images in order of first appearance,
    each image's rows in store order."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(meta):
        groups.setdefault((m.get("index"), m.get("token")), []).append(i)
    return list(groups.values())


def image_meta(meta: list[dict], groups: list[list[int]]) -> list[dict]:
    """One metadata row per image: its first row without the patch's own fields."""
    return [{k: v for k, v in meta[rows[0]].items() if k not in PATCH_FIELDS} for rows in groups]


def pooled_activations(activations, groups: list[list[int]], how: str = POOLS[0]):
    """The ``len(groups) x K`` pooled activation of each group's rows: their ``"max"`` or ``"mean"``
    (:data:`POOLS`). Dense out; a sparse ``N x K`` is read by its non-zeros, never densified (its implicit
    zeros count in the max of a group where a concept is not stored on every row). Rows in no group are left
    out."""
    import torch

    from mmconcepts.concepts.activations import is_sparse

    check_pool(how)
    n = activations.shape[0]
    owner = torch.full((n,), -1, dtype=torch.long)
    for g, rows in enumerate(groups):
        if any(not 0 <= r < n for r in rows):
            raise MMConceptsError(f"an image group names a row outside the {n} activation rows; pass the "
                                  "activations with the metadata of the same rows")
        owner[rows] = g
    sizes = torch.tensor([max(len(g), 1) for g in groups], dtype=torch.float32)
    shape = (len(groups), activations.shape[1])
    if is_sparse(activations):
        coo = activations.to_sparse_coo().coalesce()
        rows, cols = coo.indices()
        kept = owner[rows] >= 0
        where, values = (owner[rows][kept], cols[kept]), coo.values().float()[kept]
    else:
        kept = (owner >= 0).nonzero().squeeze(1)
        dense = torch.as_tensor(activations).float()[kept]
        if how == "mean":
            return torch.zeros(shape).index_add_(0, owner[kept], dense) / sizes[:, None]
        index = owner[kept][:, None].expand(-1, shape[1])
        return torch.full(shape, -torch.inf).scatter_reduce_(0, index, dense, "amax")
    if how == "mean":
        return torch.zeros(shape).index_put_(where, values, accumulate=True) / sizes[:, None]
    stored = torch.zeros(shape).index_put_(where, torch.ones_like(values), accumulate=True)
    out = torch.full(shape, -torch.inf)
    flat = where[0] * shape[1] + where[1]
    out.view(-1).scatter_reduce_(0, flat, values, "amax")
    return torch.where(stored < sizes[:, None], out.clamp(min=0.0), out)


def patch_grid(values, meta_rows: list[dict]) -> dict:
    """A concept's map on one image from its activation on each of the image's patches (``values``, in the
    order of ``meta_rows``): ``{"method": "activation", "grid", "box"}`` as the concept maps are written
    (:mod:`mmconcepts.attribution`): ``grid`` rows top to bottom, ``box`` the region the grid covers.

    The patches are placed by their boxes; a patch without a box (a token with no place on the image) is left
    out. Patches of several tiles of one image (multi-crop processors) are averaged where their cells meet.
    """
    placed = [(float(v), m["box"]) for v, m in zip(list(values), meta_rows) if m.get("box")]
    if not placed:
        raise MMConceptsError("no patch of this image has a box on it; its concept map cannot be drawn")
    xs = sorted({round(b[0], 3) for _, b in placed})
    ys = sorted({round(b[1], 3) for _, b in placed})
    sums = [[0.0] * len(xs) for _ in ys]
    counts = [[0] * len(xs) for _ in ys]
    for v, b in placed:
        r, c = ys.index(round(b[1], 3)), xs.index(round(b[0], 3))
        sums[r][c] += v
        counts[r][c] += 1
    grid = [[s / n if n else math.nan for s, n in zip(rs, ns)] for rs, ns in zip(sums, counts)]
    box = [min(b[0] for _, b in placed), min(b[1] for _, b in placed),
           max(b[2] for _, b in placed), max(b[3] for _, b in placed)]
    return {"method": "activation", "grid": [[round(v, 5) for v in row] for row in grid], "box": box}


def per_image(activations, meta: list[dict], how: str = POOLS[0]) -> tuple[object, list[dict]]:
    """``(activations, meta)`` one row per image: pooled by ``how`` (:func:`pooled_activations`,
    :func:`image_meta`) for image-token rows, as they are for any other rows."""
    if not is_image_rows(meta):
        return activations, meta
    groups = image_groups(meta)
    return pooled_activations(activations, groups, how), image_meta(meta, groups)


def n_images(meta: list[dict]) -> int:
    """How many images (image-token rows) or samples (any other rows) the metadata rows hold."""
    return len(image_groups(meta)) if is_image_rows(meta) else len(meta)
