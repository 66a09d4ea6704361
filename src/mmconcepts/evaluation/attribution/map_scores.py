"""Are the concept maps right? The pointing game and the energy inside the object, on ShapesWorld.

ShapesWorld records every object's centre and the radius of the circle that bounds it, so a map of the concept
the model used when it named the token's object (the first object of that shape, as
:func:`~mmconcepts.evaluation.causal.scores.token_object` picks it) can be checked:

- :func:`pointing_hit`: the centre of the map's peak cell lies within the object's radius plus half a cell
  of the object's centre (the pointing game, Zhang et al. 2016, with the tolerance of one cell's size);
- :func:`energy_inside`: the share of the map's positive mass inside the object's disc, each cell's mass
  spread evenly over its area (a map without positive mass has none inside: 0).

Both are pure functions of a grid, the box it covers and an object record. The baselines are maps that know
nothing of the image: :func:`centre_grid` (a peak at the image's centre) and the *random patch* (one random
cell), whose scores are computed exactly, as expectations over the cells (:func:`random_patch_scores`), so
they need no seed. :func:`object_grid` (each cell's share inside the disc) is the best a map on this grid can
do: it bounds the energy a cell-sized map can put inside a small object.

:func:`heatmap_evaluation` runs it for ``evaluate --heatmaps``: the top-1 concept of every test image, each
map method, the baselines; see :mod:`mmconcepts.evaluation.results` for where it goes in ``metrics.json``.
"""

from __future__ import annotations

import math

__all__ = ["BASELINES", "baseline_scores", "centre_grid", "energy_inside", "heatmap_evaluation", "inside_fractions",
           "markdown_table", "object_grid", "pointing_hit", "random_patch_scores", "report_maps", "score_maps",
           "write_heatmaps"]

#: Baseline rows of the heatmap table, in order.
BASELINES = ("centre", "random-patch", "object-mask")
#: Sample points per cell side when measuring the share of a cell inside a disc.
SAMPLES = 16
#: Images per ``generate`` call when the images are first read (captioned) for their maps.
READ_BATCH = 64


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


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def score_maps(maps: list, objects: list) -> dict:
    """``{"pointing_game", "energy_inside", "n_images"}`` of maps (``grid``, ``box``) against their objects."""
    hits = [pointing_hit(m["grid"], m["box"], o) for m, o in zip(maps, objects)]
    energy = [energy_inside(m["grid"], m["box"], o) for m, o in zip(maps, objects)]
    return {"pointing_game": _mean([float(h) for h in hits]), "energy_inside": _mean(energy), "n_images": len(maps)}


def baseline_scores(maps: list, objects: list) -> dict:
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
    return {name: {"pointing_game": _mean(v["pointing"]), "energy_inside": _mean(v["energy"]), "n_images": len(maps)}
            for name, v in rows.items()}


def heatmap_evaluation(concepts, test_meta: list, test_activations, adapter, methods, *, n_images: int | None = None,
                       batch_size: int = 16) -> dict:
    """The pointing game and the energy inside of every map method, for the top-1 concept of each test image.

    Parameters
    ----------
    concepts : ConceptSet
        The main concepts.
    test_meta : list of dict
        Test metadata rows (``image``; ShapesWorld ``attributes``), one per test sample.
    test_activations : (N, K) tensor
        The concepts' activations of the test samples (the top-1 concept is their argmax).
    adapter : ModelAdapter
        The whole model.
    methods : sequence of str, or dict
        Map methods (:data:`~mmconcepts.attribution.METHODS`), or ``{row name: MapSettings}`` (variants).
    n_images : int or None
        Only the first ``n_images`` test images (``None``: all).
    batch_size : int
        Pairs per forward pass.

    Returns
    -------
    dict
        ``{"methods": {method: {pointing_game, energy_inside, n_images, seconds}}, "baselines": {name: {...}},
        "concept": "top-1", "n_images", "n_skipped", "grid": [rows, cols]}``; without ShapesWorld ground truth
        ``methods`` and ``baselines`` are empty and ``ground_truth`` is false.
    """
    import time

    from mmconcepts.data.readers import load_image
    from mmconcepts.evaluation.causal.scores import token_object
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.attribution import MapSettings, maps_of_readings, read_rows

    reading = store_reading(concepts.manifest, concepts.token)
    rows, seen = [], set()
    for i, m in enumerate(test_meta):
        if m["image"] not in seen:
            seen.add(m["image"])
            rows.append(i)
    rows = rows[:n_images] if n_images is not None else rows
    objects = [token_object((test_meta[i].get("attributes") or {}).get("objects"), reading["token"]) for i in rows]
    known = [(i, o) for i, o in zip(rows, objects) if o is not None]
    result = {"concept": "top-1", "ground_truth": bool(known), "n_images": 0, "n_skipped": len(rows) - len(known),
              "methods": {}, "baselines": {}}
    if not known:
        return result
    pils = [load_image(test_meta[i]["image"]) for i, _ in known]
    start = time.perf_counter()
    readings = read_rows(adapter, pils, [test_meta[i] for i, _ in known], reading, batch_size=READ_BATCH,
                         mode=concepts.manifest.get("mode", "generate"))
    read_seconds = time.perf_counter() - start
    pairs = [(j, int(test_activations[i].argmax())) for j, (i, _) in enumerate(known)]
    prompt = adapter.prompt(reading["instruction"])
    kept = [j for j, r in enumerate(readings) if r.found]
    result.update(n_images=len(kept), n_skipped=result["n_skipped"] + len(known) - len(kept),
                  read_seconds=round(read_seconds, 3))
    variants = dict(methods) if isinstance(methods, dict) else {m: MapSettings(m, batch_size=batch_size)
                                                                  for m in methods}
    methods = list(variants)
    maps = {}
    for method, settings in variants.items():
        start = time.perf_counter()
        made = maps_of_readings(adapter, concepts, readings, pairs, settings, prompt)
        seconds = time.perf_counter() - start
        maps[method] = [{"grid": made[j].grid, "box": made[j].box} for j in kept]
        row = score_maps(maps[method], [known[j][1] for j in kept])
        row["seconds_per_image"] = round(seconds / max(len(kept), 1), 4)
        result["methods"][method] = row
    if kept and methods:
        first = maps[methods[0]]
        result["baselines"] = baseline_scores(first, [known[j][1] for j in kept])
        result["grid"] = [len(first[0]["grid"]), len(first[0]["grid"][0])]
    return result


def _map_entry(m, image: str, out) -> dict:
    from mmconcepts.files import link

    return {"image": link(image, out), "grid": [[round(float(v), 5) for v in row] for row in m.grid],
            "box": [round(float(v), 3) for v in m.box]}


def report_maps(concepts, test_meta: list, test_activations, adapter, method: str, out, *, n_images: int = 5,
                n_explanations: int = 8, top: int = 3, batch_size: int = 16) -> dict:
    """The maps the report shows (the content of ``maps.json``, image paths relative to ``out``): each
    concept's ``n_images`` most activating training images, and the first ``n_explanations`` test samples
    with their ``top`` concepts (the local explanations of ``explanations.json``).

    Returns
    -------
    dict
        ``{"method", "concepts": [{"index", "images": [{"image", "grid", "box"}]}], "explanations": [{"id",
        "image", "concepts": [{"index", "grid", "box"}]}]}``; an image whose caption misses the token has no
        map and is left out.
    """
    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.attribution import MapSettings, maps_of_readings, read_rows

    reading = store_reading(concepts.manifest, concepts.token)
    train_rows = {}
    for row in concepts.train_meta():
        train_rows.setdefault(str(row["image"]), row)
    wanted = []  # (image path, concept, where, metadata row)
    for k in range(concepts.n_concepts):
        wanted += [(str(im["image"]), k, ("concept", k), train_rows.get(str(im["image"]), {}))
                   for im in concepts.images(k)[:n_images]]
    explained = test_meta[:n_explanations]
    for i, m in enumerate(explained):
        ks = test_activations[i].float().topk(min(top, test_activations.shape[1])).indices.tolist()
        wanted += [(str(m["image"]), int(k), ("explanation", i), m) for k in ks]
    first = {}
    for path, _, _, row in wanted:
        first.setdefault(path, row)
    paths = list(first)
    readings = read_rows(adapter, [load_image(p) for p in paths], [first[p] for p in paths], reading,
                         batch_size=READ_BATCH, mode=concepts.manifest.get("mode", "generate"))
    index = {p: i for i, p in enumerate(paths)}
    pairs = [(index[w[0]], w[1]) for w in wanted]
    maps = maps_of_readings(adapter, concepts, readings, pairs, MapSettings(method, batch_size=batch_size),
                            adapter.prompt(reading["instruction"]))
    by_concept = {k: [] for k in range(concepts.n_concepts)}
    by_sample = {i: [] for i in range(len(explained))}
    for (image, k, (kind, where), _), m in zip(wanted, maps):
        if m is None:
            continue
        if kind == "concept":
            by_concept[where].append(_map_entry(m, image, out))
        else:
            by_sample[where].append({"index": k, **{key: v for key, v in _map_entry(m, image, out).items()
                                                      if key != "image"}})
    from mmconcepts.files import link

    return {"method": method,
            "concepts": [{"index": k, "images": v} for k, v in by_concept.items()],
            "explanations": [{"id": explained[i]["id"], "image": link(explained[i]["image"], out), "concepts": v}
                             for i, v in by_sample.items()]}


def write_heatmaps(tmp, out, concepts, test_meta: list, test_activations, adapter, settings) -> dict:
    """``evaluate --heatmaps``: the measured table (returned, for ``metrics.json``) and ``maps.json`` (written
    into ``tmp``, the evaluation folder to be, paths relative to ``out``) with the first method's maps."""
    from pathlib import Path

    from mmconcepts.files import write_json

    methods = tuple(settings.heatmaps)
    table = heatmap_evaluation(concepts, test_meta, test_activations, adapter, methods)
    shown = report_maps(concepts, test_meta, test_activations, adapter, methods[0], out,
                        n_explanations=settings.n_explanations)
    write_json(Path(tmp) / "maps.json", shown, indent=None)
    return {**table, "shown": methods[0]}


def markdown_table(heatmaps: dict) -> list[str]:
    """The ``heatmaps`` part of ``metrics.json`` as markdown lines: methods, then baselines."""
    rows = {**heatmaps.get("methods", {}), **heatmaps.get("baselines", {})}
    grid = heatmaps.get("grid")
    shape = f", {grid[0]} x {grid[1]} grid" if grid else ""
    lines = [f"## Concept maps: top-1 concept of {heatmaps.get('n_images', 0)} test images{shape}", "",
             "| map | pointing_game | energy_inside |", "|---|---|---|"]
    for name, row in rows.items():
        cells = [f"{row[c]:.3f}" if isinstance(row.get(c), (int, float)) else "–"
                 for c in ("pointing_game", "energy_inside")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
