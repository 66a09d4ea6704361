"""Are the concept maps right? The pointing game and the energy inside the object, on ShapesWorld.

ShapesWorld records every object's centre and the radius of the circle that bounds it, so a map of the concept
the model used when it named the token's object (the first object of that shape, as
:func:`~mmconcepts.data.truth.token_object` picks it) can be checked:

- :func:`pointing_hit`: the centre of the map's peak cell lies within the object's radius plus half a cell
  of the object's centre (the pointing game, Zhang et al. 2016, with the tolerance of one cell's size);
- :func:`energy_inside`: the share of the map's positive mass inside the object's disc, each cell's mass
  spread evenly over its area (a map without positive mass has none inside: 0).

Both are pure functions of a grid, the box it covers and an object record. The baselines are maps that know
nothing of the image: :func:`centre_grid` (a peak at the image's centre) and the *random patch* (one random
cell), whose scores are computed exactly, as expectations over the cells (:func:`random_patch_scores`), so
they need no seed. :func:`object_grid` (each cell's share inside the disc) is the best a map on this grid can
do: it bounds the energy a cell-sized map can put inside a small object.

:func:`score_maps` and :func:`baseline_scores` give the rows (:class:`MapScores`) of a set of maps;
:func:`~mmconcepts.evaluation.attribution.heatmaps.heatmap_evaluation` runs it for ``evaluate --heatmaps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmconcepts.evaluation.rows import Row, mean

__all__ = ["BASELINES", "MapScores", "baseline_scores", "centre_grid", "energy_inside", "inside_fractions",
           "object_grid", "pointing_hit", "random_patch_scores", "score_maps"]

#: Baseline rows of the heatmap table, in order.
BASELINES = ("centre", "random-patch", "object-mask")
#: Sample points per cell side when measuring the share of a cell inside a disc.
SAMPLES = 16


@dataclass(frozen=True, eq=False)
class MapScores(Row):
    """The scores of a map method (or a baseline) over the test images, for ``metrics.json``'s ``heatmaps``.

    Examples
    --------
    >>> MapScores(pointing_game=0.5, energy_inside=0.25, n_images=2).to_json()
    {'pointing_game': 0.5, 'energy_inside': 0.25, 'n_images': 2}
    """

    pointing_game: float | None = None
    energy_inside: float | None = None
    n_images: int | None = None
    seconds_per_image: float | None = None


def _cells(box, rows: int, cols: int):
    """Cell width, height and the centres (``rows x cols`` arrays of x and y)."""
    import numpy as np

    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = (x1 - x0) / cols, (y1 - y0) / rows
    cx = x0 + (np.arange(cols) + 0.5) * w
    cy = y0 + (np.arange(rows) + 0.5) * h
    return w, h, np.broadcast_to(cx, (rows, cols)), np.broadcast_to(cy[:, None], (rows, cols))


def _disc(obj: dict) -> tuple[float, float, float]:
    from mmconcepts.data.shapesworld import SIZES

    radius = obj.get("radius", SIZES.get(obj.get("size"), None))
    if radius is None:
        raise ValueError(f"object record without a size or radius: {obj}")
    return float(obj["x"]), float(obj["y"]), float(radius)


def pointing_hit(grid, box, obj: dict) -> bool:
    """Whether the centre of the map's peak cell (the first on a tie) lies within the object's radius plus half
    a cell (the larger side) of its centre.

    Parameters
    ----------
    grid : (rows, cols) array
        The map, rows top to bottom.
    box : (x0, y0, x1, y1)
        The region of the image the grid covers, in pixels.
    obj : dict
        ``x``, ``y`` (centre) and ``size`` (a ShapesWorld size) or ``radius``.

    Examples
    --------
    >>> pointing_hit([[0, 1], [0, 0]], (0, 0, 20, 20), {"x": 14, "y": 6, "radius": 1})
    True
    >>> pointing_hit([[1, 0], [0, 0]], (0, 0, 20, 20), {"x": 14, "y": 6, "radius": 1})
    False
    """
    import numpy as np

    grid = np.asarray(grid, dtype=np.float64)
    w, h, cx, cy = _cells(box, *grid.shape)
    r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
    x, y, radius = _disc(obj)
    return bool(math.hypot(cx[r, c] - x, cy[r, c] - y) <= radius + max(w, h) / 2)


def inside_fractions(box, rows: int, cols: int, obj: dict):
    """``rows x cols``: the share of each cell's area inside the object's disc (``SAMPLES``^2 points a cell)."""
    import numpy as np

    w, h, cx, cy = _cells(box, rows, cols)
    offsets = (np.arange(SAMPLES) + 0.5) / SAMPLES - 0.5
    px = cx[..., None, None] + offsets[None, None, None, :] * w
    py = cy[..., None, None] + offsets[None, None, :, None] * h
    x, y, radius = _disc(obj)
    return (((px - x) ** 2 + (py - y) ** 2) <= radius ** 2).mean(axis=(-1, -2))


def energy_inside(grid, box, obj: dict) -> float:
    """The share of the map's positive mass inside the object's disc (0 for a map without positive mass).

    Examples
    --------
    >>> energy_inside([[3, -5, 1]], (0, 0, 30, 10), {"x": 5, "y": 5, "radius": 7.1})  # cell 0 inside, 2 out
    0.75
    """
    import numpy as np

    grid = np.asarray(grid, dtype=np.float64)
    positive = np.clip(grid, 0, None)
    total = positive.sum()
    if not total > 0:
        return 0.0
    return float((positive * inside_fractions(box, *grid.shape, obj)).sum() / total)


def centre_grid(rows: int, cols: int):
    """The *centre* baseline: a Gaussian bump at the grid's centre (sigma a quarter of the shorter side)."""
    import numpy as np

    y = np.arange(rows) + 0.5 - rows / 2
    x = np.arange(cols) + 0.5 - cols / 2
    sigma = min(rows, cols) / 4
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))


def object_grid(box, rows: int, cols: int, obj: dict):
    """The *object-mask* reference: each cell's share inside the object's disc (the map a perfect method on
    this grid would draw)."""
    return inside_fractions(box, rows, cols, obj)


def random_patch_scores(box, rows: int, cols: int, obj: dict) -> dict:
    """The *random patch* baseline, exactly: a map that is one uniformly drawn cell scores, on average, the
    share of cells whose centre is close enough (pointing) and the mean share of a cell inside the disc
    (energy)."""
    import numpy as np

    w, h, cx, cy = _cells(box, rows, cols)
    x, y, radius = _disc(obj)
    hits = np.hypot(cx - x, cy - y) <= radius + max(w, h) / 2
    return {"pointing_game": float(hits.mean()), "energy_inside": float(inside_fractions(box, rows, cols, obj).mean())}


def _rounded_mean(values) -> float | None:
    value = mean(values)
    return None if value is None else round(value, 4)


def score_maps(maps: list, objects: list) -> MapScores:
    """The pointing game and energy inside of maps (``grid``, ``box``) against their objects."""
    hits = [pointing_hit(m["grid"], m["box"], o) for m, o in zip(maps, objects)]
    energy = [energy_inside(m["grid"], m["box"], o) for m, o in zip(maps, objects)]
    return MapScores(_rounded_mean([float(h) for h in hits]), _rounded_mean(energy), len(maps))


def baseline_scores(maps: list, objects: list) -> dict[str, MapScores]:
    """The baselines (:data:`BASELINES`) on the same grids and objects as ``maps``."""
    import numpy as np

    rows = {name: {"pointing": [], "energy": []} for name in BASELINES}
    for m, o in zip(maps, objects):
        r, c = np.asarray(m["grid"]).shape
        for name, grid in (("centre", centre_grid(r, c)), ("object-mask", object_grid(m["box"], r, c, o))):
            rows[name]["pointing"].append(float(pointing_hit(grid, m["box"], o)))
            rows[name]["energy"].append(energy_inside(grid, m["box"], o))
        rand = random_patch_scores(m["box"], r, c, o)
        rows["random-patch"]["pointing"].append(rand["pointing_game"])
        rows["random-patch"]["energy"].append(rand["energy_inside"])
    return {name: MapScores(_rounded_mean(v["pointing"]), _rounded_mean(v["energy"]), len(maps))
            for name, v in rows.items()}
