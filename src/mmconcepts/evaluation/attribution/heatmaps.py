"""The concept-map evaluation (``evaluate --heatmaps``): are the maps of the concepts on the token's object?

:func:`heatmap_evaluation` maps the top-1 concept of every test image with each map method
(:mod:`mmconcepts.attribution`) and scores the maps against ShapesWorld's objects with the pointing game and the
energy inside (:mod:`~mmconcepts.evaluation.attribution.map_scores`), next to the baselines;
:func:`report_maps` draws the maps the report shows. :func:`concept_map_evaluation` runs both as configured by
:class:`HeatmapSettings` and returns the two outputs: :class:`HeatmapScores` (``metrics.json``'s ``heatmaps``)
and :class:`ReportMaps` (``maps.json``); their ``to_json`` is the file's content (see
:mod:`mmconcepts.evaluation.results` and docs/FORMAT.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.attribution.map_scores import MapScores, baseline_scores, score_maps
from mmconcepts.params import Interval, param, validate

__all__ = ["HeatmapScores", "HeatmapSettings", "ReportMaps", "concept_map_evaluation", "heatmap_evaluation",
           "markdown_table", "report_maps"]

#: Images per ``generate`` call when the images are first read (captioned) for their maps.
READ_BATCH = 64


@dataclass(frozen=True)
class HeatmapSettings:
    """What the concept-map evaluation measures and draws.

    Parameters
    ----------
    methods : map methods (:data:`~mmconcepts.attribution.METHODS`), or ``{row name: MapSettings}`` (variants);
        the first one's maps go to the report.
    n_images : only the first ``n_images`` test images are scored (``None``: all).
    batch_size : pairs per forward pass.
    n_explanations : test samples whose top concepts the report maps.
    n_concept_images : most activating training images the report maps per concept.
    top : concepts mapped per explained test sample.

    Examples
    --------
    >>> HeatmapSettings(["attribution", "projection"]).shown
    'attribution'
    """

    methods: tuple[str, ...] | Mapping = ("attribution",)
    n_images: int | None = param(None, flag=None, constraint=Interval(int, 1), optional=True,
                                 help="test images scored (None: all)")
    batch_size: int = param(16, flag=None, constraint=Interval(int, 1), help="pairs per forward pass")
    n_explanations: int = param(8, flag=None, constraint=Interval(int, 0), help="test samples the report maps")
    n_concept_images: int = param(5, flag=None, constraint=Interval(int, 1),
                                  help="training images the report maps per concept")
    top: int = param(3, flag=None, constraint=Interval(int, 1), help="concepts mapped per explained sample")

    def __post_init__(self):
        if not isinstance(self.methods, Mapping):
            object.__setattr__(self, "methods", tuple(self.methods))
        if not self.methods:
            raise MMConceptsError("the concept-map evaluation needs at least one map method; give --heatmaps one")
        validate(self)

    @property
    def shown(self) -> str:
        """The map method whose maps the report shows."""
        return next(iter(self.methods))


@dataclass(frozen=True)
class HeatmapScores:
    """The scores of the concept maps: the ``heatmaps`` part of ``metrics.json``.

    ``methods`` and ``baselines`` are empty (and ``ground_truth`` false) without ShapesWorld ground truth;
    ``read_seconds`` and ``grid`` are absent when no image was read or mapped, ``shown`` when no report maps
    were drawn.
    """

    ground_truth: bool
    n_images: int
    n_skipped: int
    methods: dict[str, MapScores] = field(default_factory=dict)
    baselines: dict[str, MapScores] = field(default_factory=dict)
    concept: str = "top-1"
    read_seconds: float | None = None
    grid: tuple[int, int] | None = None
    shown: str | None = None

    def to_json(self) -> dict:
        out = {"concept": self.concept, "ground_truth": self.ground_truth, "n_images": self.n_images,
               "n_skipped": self.n_skipped, "methods": {k: v.to_json() for k, v in self.methods.items()},
               "baselines": {k: v.to_json() for k, v in self.baselines.items()}}
        optional = {"read_seconds": self.read_seconds, "grid": list(self.grid) if self.grid else None,
                    "shown": self.shown}
        return {**out, **{k: v for k, v in optional.items() if v is not None}}


@dataclass(frozen=True)
class ReportMaps:
    """The maps the report shows: the content of ``maps.json`` (image paths relative to the evaluation folder).

    ``concepts``: ``[{"index", "images": [{"image", "grid", "box"}]}]``, each concept's most activating training
    images; ``explanations``: ``[{"id", "image", "concepts": [{"index", "grid", "box"}]}]``, the first test
    samples with their top concepts. An image whose caption misses the token has no map and is left out.
    """

    method: str
    concepts: list[dict]
    explanations: list[dict]

    def to_json(self) -> dict:
        return {"method": self.method, "concepts": self.concepts, "explanations": self.explanations}


def _first_rows(test_meta: list, n_images: int | None) -> list[int]:
    """The index of each image's first test sample, in order (the first ``n_images`` images)."""
    rows, seen = [], set()
    for i, m in enumerate(test_meta):
        if m["image"] not in seen:
            seen.add(m["image"])
            rows.append(i)
    return rows[:n_images] if n_images is not None else rows


def heatmap_evaluation(concepts, test_meta: list, test_activations, adapter, methods, *, n_images: int | None = None,
                       batch_size: int = 16) -> HeatmapScores:
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
    HeatmapScores
        Each method's :class:`~mmconcepts.evaluation.attribution.map_scores.MapScores` (with its
        ``seconds_per_image``) and the baselines'; without ShapesWorld ground truth none.
    """
    from mmconcepts.attribution import MapSettings, maps_of_readings, read_rows
    from mmconcepts.data.readers import load_image
    from mmconcepts.data.truth import token_object
    from mmconcepts.extract.extraction import store_reading

    reading = store_reading(concepts.manifest, concepts.token)
    rows = _first_rows(test_meta, n_images)
    objects = [token_object((test_meta[i].get("attributes") or {}).get("objects"), reading["token"]) for i in rows]
    known = [(i, o) for i, o in zip(rows, objects) if o is not None]
    if not known:
        return HeatmapScores(ground_truth=False, n_images=0, n_skipped=len(rows))
    pils = [load_image(test_meta[i]["image"]) for i, _ in known]
    start = time.perf_counter()
    readings = read_rows(adapter, pils, [test_meta[i] for i, _ in known], reading, batch_size=READ_BATCH,
                         mode=concepts.manifest.get("mode", "generate"))
    read_seconds = time.perf_counter() - start
    pairs = [(j, int(test_activations[i].argmax())) for j, (i, _) in enumerate(known)]
    prompt = adapter.prompt(reading["instruction"])
    kept = [j for j, r in enumerate(readings) if r.found]
    truth = [known[j][1] for j in kept]
    variants = dict(methods) if isinstance(methods, Mapping) else {m: MapSettings(m, batch_size=batch_size)
                                                                   for m in methods}
    maps, scores = {}, {}
    for method, settings in variants.items():
        start = time.perf_counter()
        made = maps_of_readings(adapter, concepts, readings, pairs, settings, prompt)
        seconds = time.perf_counter() - start
        maps[method] = [{"grid": made[j].grid, "box": made[j].box} for j in kept]
        scores[method] = replace(score_maps(maps[method], truth),
                                 seconds_per_image=round(seconds / max(len(kept), 1), 4))
    first = maps[next(iter(variants))] if kept and variants else None
    return HeatmapScores(ground_truth=True, n_images=len(kept), n_skipped=len(rows) - len(kept), methods=scores,
                         baselines=baseline_scores(first, truth) if first else {},
                         read_seconds=round(read_seconds, 3),
                         grid=(len(first[0]["grid"]), len(first[0]["grid"][0])) if first else None)


def _map_entry(m, image: str, out) -> dict:
    from mmconcepts.files import link

    return {"image": link(image, out), "grid": [[round(float(v), 5) for v in row] for row in m.grid],
            "box": [round(float(v), 3) for v in m.box]}


def report_maps(concepts, test_meta: list, test_activations, adapter, method: str, out, *, n_images: int = 5,
                n_explanations: int = 8, top: int = 3, batch_size: int = 16) -> ReportMaps:
    """The maps the report shows (``maps.json``, image paths relative to ``out``): each concept's ``n_images``
    most activating training images, and the first ``n_explanations`` test samples with their ``top`` concepts
    (the local explanations of ``explanations.json``)."""
    from mmconcepts.attribution import MapSettings, maps_of_readings, read_rows
    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.files import link

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
    return ReportMaps(method, [{"index": k, "images": v} for k, v in by_concept.items()],
                      [{"id": explained[i]["id"], "image": link(explained[i]["image"], out), "concepts": v}
                       for i, v in by_sample.items()])


def concept_map_evaluation(concepts, test_meta: list, test_activations, adapter, settings: HeatmapSettings,
                           out) -> tuple[HeatmapScores, ReportMaps]:
    """``evaluate --heatmaps``: the scores of every map method (for ``metrics.json``) and the report's maps of
    the first method (for ``maps.json``, paths relative to ``out``, the evaluation folder to be)."""
    scores = heatmap_evaluation(concepts, test_meta, test_activations, adapter, settings.methods,
                                n_images=settings.n_images, batch_size=settings.batch_size)
    shown = report_maps(concepts, test_meta, test_activations, adapter, settings.shown, out,
                        n_images=settings.n_concept_images, n_explanations=settings.n_explanations, top=settings.top,
                        batch_size=settings.batch_size)
    return replace(scores, shown=settings.shown), shown


def markdown_table(heatmaps: Mapping) -> list[str]:
    """The ``heatmaps`` part of ``metrics.json`` (as read back) as markdown lines: methods, then baselines."""
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
