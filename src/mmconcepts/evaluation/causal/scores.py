"""The causal metrics, as pure functions of captions before and after an intervention (ShapesWorld's grammar
parses them back into objects): steering and ablation success, specificity, fluency, and the word-based
scores for data without ground truth. The interventions themselves are run by
:mod:`mmconcepts.evaluation.causal.interventions`.
"""

from __future__ import annotations

METRICS = ("steering_success", "ablation_success", "specificity", "fluency")


def concept_target(words) -> tuple[str, str] | None:
    """``(attribute, value)`` named by a concept's first word, or ``None`` (no word, a shape, no attribute)."""
    from mmconcepts.evaluation.grounding.ground_truth import attribute_vocabulary

    if not words:
        return None
    target = attribute_vocabulary().get(str(words[0]).strip().lower())
    if target is None or target[0] == "shape":
        return None
    return target


def token_object(objects, token: str) -> dict | None:
    """The first object (a parsed caption's or a ground-truth record's) whose shape is ``token``."""
    for obj in objects or []:
        if obj.get("shape") == token:
            return obj
    return None


def is_fluent(caption: str) -> bool:
    """The caption parses: at least one object, and every object phrase names its shape."""
    from mmconcepts.data.shapesworld import parse_caption

    objects = parse_caption(caption)
    return bool(objects) and all(o.get("shape") is not None for o in objects)


def steered_has(caption: str, token: str, target) -> bool:
    """Whether ``caption`` says ``target`` (``(attribute, value)``) of its token object."""
    from mmconcepts.data.shapesworld import parse_caption

    obj = token_object(parse_caption(caption), token)
    return obj is not None and obj.get(target[0]) == target[1]


def specificity(before: str, after: str, token: str, attribute: str | None) -> float:
    """Share of the other attributes the intervention left as ``before`` said them (see the module doc):
    the token object's attributes except ``attribute`` and its shape, every other object's four."""
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


def _mean(values):
    values = [v for v in values if v is not None]
    return float(sum(values) / len(values)) if values else None


def concept_scores(pairs_steer, pairs_ablate, token: str, target) -> dict:
    """The metrics of one concept from its caption pairs.

    ``pairs_steer``: ``(truth, before, after)`` per steered image, ``truth`` the image's token object
    (ground truth, ``None`` when unknown); ``pairs_ablate`` the same for ablated images (may be empty). Only
    images whose truth lacks (steering) / has (ablation) ``target`` count for the success rates.
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
        out["steering_success"] = _mean(steer_hits)
    if ablate_hits:
        out["ablation_success"] = _mean(ablate_hits)
    if spec:
        out["specificity"] = _mean(spec)
    if pairs_steer:
        out["fluency"] = _mean([float(is_fluent(after)) for _, _, after in pairs_steer])
    out["n_steer"], out["n_ablate"] = len(steer_hits), len(ablate_hits)
    return out


def has_words(caption: str, words) -> bool:
    """Whether ``caption`` says any of ``words`` (whole words, case-insensitive)."""
    said = set(caption.lower().replace(",", " ").split())
    return any(w.lower() in said for w in words)


def word_scores(pairs_steer, pairs_ablate, words) -> dict:
    """The metrics without ground truth: the concept's words appear after steering / leave after ablation."""
    out: dict = {}
    steer = [float(has_words(a, words)) for b, a in pairs_steer if not has_words(b, words)]
    ablate = [float(not has_words(a, words)) for b, a in pairs_ablate if has_words(b, words)]
    if steer:
        out["steering_success"] = _mean(steer)
    if ablate:
        out["ablation_success"] = _mean(ablate)
    out["n_steer"], out["n_ablate"] = len(steer), len(ablate)
    return out


# ---- running the interventions ---------------------------------------------------------------------------------


def metrics_row(scores: dict) -> dict:
    """The four metrics of a :func:`causal_scores` result, for a row of ``metrics.json``."""
    return {m: scores[m] for m in METRICS if m in scores}


def format_table(rows: dict) -> str:
    """``{name: {metric: value}}`` as a markdown table of the four causal metrics (``–``: does not apply)."""
    lines = ["| row | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, row in rows.items():
        cells = [f"{row[m]:.3f}" if isinstance(row.get(m), (int, float)) else "–" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
