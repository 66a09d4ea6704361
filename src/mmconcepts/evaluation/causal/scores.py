"""The causal metrics, as pure functions of captions before and after an intervention (ShapesWorld's grammar
parses them back into objects): steering and ablation success, specificity, fluency, and the word-based
scores for data without ground truth. The interventions themselves are run by
:mod:`mmconcepts.evaluation.causal.interventions`; the object an intervention is read on (the token object) and
the value a concept targets come from ShapesWorld's truth (:mod:`mmconcepts.data.truth`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from mmconcepts.data.truth import token_object
from mmconcepts.evaluation.rows import Row, mean

METRICS = ("steering_success", "ablation_success", "specificity", "fluency")


@dataclass(frozen=True, eq=False)
class CausalRow(Row):
    """The causal metrics of one set of directions, for a row of ``metrics.json`` (``None``: does not apply).

    Examples
    --------
    >>> CausalRow(steering_success=0.5, fluency=1.0).to_json()
    {'steering_success': 0.5, 'fluency': 1.0}
    """

    steering_success: float | None = None
    ablation_success: float | None = None
    specificity: float | None = None
    fluency: float | None = None


@dataclass(frozen=True, eq=False)
class CausalScores(Row):
    """The causal evaluation of one set of concepts with one direction: what ``causal.json`` keeps of it.

    Reads as its JSON: the metrics of :attr:`row` that apply, ``n_concepts`` (the concepts evaluated),
    ``n_images``, the settings (``direction``, ``layer``, ``positions``: ``"image"`` for image-token concepts,
    ``strength_factor``; ``ablate_where`` when image tokens were ablated),
    ``ground_truth`` (ShapesWorld truth read), ``concepts`` (the per-concept rows) and ``examples`` (caption
    pairs before / after, images as given).
    """

    row: CausalRow
    n_concepts: int
    n_images: int
    direction: str
    layer: str
    positions: str
    strength_factor: float
    ground_truth: bool
    concepts: list = field(default_factory=list)
    examples: list = field(default_factory=list)
    ablate_where: str | None = None

    def to_json(self) -> dict:
        return {**self.row.to_json(), **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "row"
                                         and not (f.name == "ablate_where" and self.ablate_where is None)}}

    def linked(self, out) -> "CausalScores":
        """The same scores with each example's image path relative to the folder ``out``."""
        from mmconcepts.files import link

        return replace(self, examples=[{**e, "image": link(e["image"], out)} for e in self.examples])


@dataclass(frozen=True)
class CausalResult:
    """The whole causal evaluation: ``{method: {direction: CausalScores}}``, the content of ``causal.json``.

    Examples
    --------
    >>> CausalResult({}).to_json()
    {'methods': {}}
    """

    methods: dict[str, dict[str, CausalScores]]

    def rows(self, direction: str = "concept") -> dict[str, CausalRow]:
        """Each method's :class:`CausalRow` with ``direction`` (the methods evaluated with it)."""
        return {m: by[direction].row for m, by in self.methods.items() if direction in by}

    def to_json(self, out=None) -> dict:
        """``{"methods": ...}``; with ``out``, the examples' images relative to that folder."""
        return {"methods": {m: {d: (s.linked(out) if out is not None else s).to_json() for d, s in by.items()}
                            for m, by in self.methods.items()}}


def is_fluent(caption: str) -> bool:
    """The caption parses: at least one object, and every object phrase names its shape.

    Examples
    --------
    >>> is_fluent("a red circle on the left"), is_fluent("red red red")
    (True, False)
    """
    from mmconcepts.data.shapesworld import parse_caption

    objects = parse_caption(caption)
    return bool(objects) and all(o.get("shape") is not None for o in objects)


def steered_has(caption: str, token: str, target) -> bool:
    """Whether ``caption`` says ``target`` (``(attribute, value)``) of its token object.

    Examples
    --------
    >>> steered_has("a blue circle on the left and a red square", "circle", ("colour", "blue"))
    True
    >>> steered_has("a red circle on the left and a blue square", "circle", ("colour", "blue"))
    False
    """
    from mmconcepts.data.shapesworld import parse_caption

    obj = token_object(parse_caption(caption), token)
    return obj is not None and obj.get(target[0]) == target[1]


def specificity(before: str, after: str, token: str, attribute: str | None) -> float:
    """Share of the other attributes the intervention left as ``before`` said them (see the module doc):
    the token object's attributes except ``attribute`` and its shape, every other object's four.

    Examples
    --------
    Steering the circle's colour changed nothing else; then it also moved the circle and lost the square:

    >>> before = "a red circle on the left and a blue square at the top"
    >>> specificity(before, "a blue circle on the left and a blue square at the top", "circle", "colour")
    1.0
    >>> specificity(before, "a blue circle on the right", "circle", "colour")
    0.16666666666666666
    """
    from mmconcepts.data.shapesworld import ATTRIBUTES, parse_caption

    b, a = parse_caption(before), parse_caption(after)
    tb, ta = token_object(b, token), token_object(a, token)
    same = total = 0
    own = [x for x in ATTRIBUTES if x not in ("shape", attribute)]
    if tb is not None or ta is not None:
        for x in own:
            total += 1
            same += tb is not None and ta is not None and tb.get(x) == ta.get(x)
    others_b = [o for o in b if o is not tb]
    others_a = [o for o in a if o is not ta]
    for i in range(max(len(others_b), len(others_a))):
        ob = others_b[i] if i < len(others_b) else None
        oa = others_a[i] if i < len(others_a) else None
        for x in ATTRIBUTES:
            total += 1
            same += ob is not None and oa is not None and ob.get(x) == oa.get(x)
    return same / total if total else 1.0


def concept_scores(pairs_steer, pairs_ablate, token: str, target) -> dict:
    """The metrics of one concept from its caption pairs.

    ``pairs_steer``: ``(truth, before, after)`` per steered image, ``truth`` the image's token object
    (ground truth, ``None`` when unknown); ``pairs_ablate`` the same for ablated images (may be empty). Only
    images whose truth lacks (steering) / has (ablation) ``target`` count for the success rates.

    Examples
    --------
    >>> truth = {"shape": "circle", "colour": "red", "size": "small", "position": "left"}
    >>> pairs = [(truth, "a small red circle on the left", "a small blue circle on the left")]
    >>> concept_scores(pairs, [], "circle", ("colour", "blue"))
    {'steering_success': 1.0, 'specificity': 1.0, 'fluency': 1.0, 'n_steer': 1, 'n_ablate': 0}
    """
    out: dict = {}
    steer_hits, ablate_hits, spec = [], [], []
    for truth, before, after in pairs_steer:
        if truth is None or truth.get(target[0]) == target[1]:
            continue
        ok = steered_has(after, token, target)
        steer_hits.append(float(ok))
        if ok:
            spec.append(specificity(before, after, token, target[0]))
    for truth, before, after in pairs_ablate:
        if truth is None or truth.get(target[0]) != target[1]:
            continue
        ok = not steered_has(after, token, target)
        ablate_hits.append(float(ok))
        if ok:
            spec.append(specificity(before, after, token, target[0]))
    if steer_hits:
        out["steering_success"] = mean(steer_hits)
    if ablate_hits:
        out["ablation_success"] = mean(ablate_hits)
    if spec:
        out["specificity"] = mean(spec)
    if pairs_steer:
        out["fluency"] = mean([float(is_fluent(after)) for _, _, after in pairs_steer])
    out["n_steer"], out["n_ablate"] = len(steer_hits), len(ablate_hits)
    return out


def has_words(caption: str, words) -> bool:
    """Whether ``caption`` says any of ``words`` (whole words, case-insensitive)."""
    said = set(caption.lower().replace(",", " ").split())
    return any(w.lower() in said for w in words)


def word_scores(pairs_steer, pairs_ablate, words) -> dict:
    """The metrics without ground truth: the concept's words appear after steering / leave after ablation.

    Only pairs whose caption before lacks (steering) / has (ablation) the words count.

    Examples
    --------
    >>> steered = [("a red circle", "a blue circle"), ("a blue square", "a blue circle")]
    >>> word_scores(steered, [("a blue square", "a red square")], ["blue"])
    {'steering_success': 1.0, 'ablation_success': 1.0, 'n_steer': 1, 'n_ablate': 1}
    """
    out: dict = {}
    steer = [float(has_words(a, words)) for b, a in pairs_steer if not has_words(b, words)]
    ablate = [float(not has_words(a, words)) for b, a in pairs_ablate if has_words(b, words)]
    if steer:
        out["steering_success"] = mean(steer)
    if ablate:
        out["ablation_success"] = mean(ablate)
    out["n_steer"], out["n_ablate"] = len(steer), len(ablate)
    return out


# ---- rows and tables ----------------------------------------------------------------------------------------------


def metrics_row(scores) -> CausalRow:
    """The four metrics of a :func:`~mmconcepts.evaluation.causal.interventions.causal_scores` result (or of any
    mapping that holds those that apply), for a row of ``metrics.json``."""
    return scores.row if isinstance(scores, CausalScores) else CausalRow(**{m: scores[m] for m in METRICS
                                                                            if m in scores})


def format_table(rows: dict) -> str:
    """``{name: {metric: value}}`` as a markdown table of the four causal metrics (``–``: does not apply).

    Examples
    --------
    >>> print(format_table({"semi-nmf": {"steering_success": 0.5, "fluency": 1.0}}))
    | row | steering_success | ablation_success | specificity | fluency |
    |---|---|---|---|---|
    | semi-nmf | 0.500 | – | – | 1.000 |
    <BLANKLINE>
    """
    lines = ["| row | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, row in rows.items():
        cells = [f"{row[m]:.3f}" if isinstance(row.get(m), (int, float)) else "–" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
