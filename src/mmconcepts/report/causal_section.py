"""The report's "Steering and ablation" section, read and checked from an evaluation folder's ``causal.json``
(written by ``mmconcepts evaluate --causal``, :mod:`mmconcepts.evaluation.causal.interventions`).

For each concept of the main method: its words, the attribute value it was read as, its steering and ablation
success (and, beside them, the diffmean and random-direction controls' steering success for the same
concept), and a few test images with the caption before and after the intervention. Bad data raises a
one-line :class:`~mmconcepts.errors.MMConceptsError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmconcepts.report.concept_cards import THUMB_PX, _malformed, _num

#: Caption pairs shown per concept (``add`` and ``ablate`` together).
N_ROWS = 4
_FIX = "rerun mmconcepts evaluate --causal to rewrite it"


def _text(value) -> str:
    return "" if value is None else str(value)


def _rows(examples, path: Path, base: Path) -> dict[int, list[dict]]:
    """``{concept: [row, ...]}`` from a direction's ``examples`` list."""
    from mmconcepts.report.plots import thumbnail

    if not isinstance(examples, list):
        raise _malformed(path, "'examples' is not a list", _FIX)
    rows: dict[int, list[dict]] = {}
    for ex in examples:
        if not isinstance(ex, dict) or isinstance(ex.get("concept"), bool) or not isinstance(ex.get("concept"), int):
            raise _malformed(path, "an example is not an object with an integer 'concept'", _FIX)
        file = ex.get("image")
        if isinstance(file, str) and file and not os.path.isabs(file):
            file = str(base / file)
        mode = "ablate" if ex.get("mode") == "ablate" else "add"
        rows.setdefault(ex["concept"], []).append({
            "mode": mode, "label": "ablated" if mode == "ablate" else "steered",
            "before": _text(ex.get("before")), "after": _text(ex.get("after")),
            "changed": _text(ex.get("before")) != _text(ex.get("after")),
            "success": ex.get("success") if isinstance(ex.get("success"), bool) else None,
            "thumb": thumbnail(file, THUMB_PX),
        })
    return rows


def _per_concept(scores, path: Path) -> dict[int, dict]:
    rows = scores.get("concepts") if isinstance(scores, dict) else None
    if not isinstance(rows, list):
        raise _malformed(path, "a direction has no 'concepts' list", _FIX)
    return {r["concept"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("concept"), int)}


def _steering(raw, path: Path, concepts: list[dict], main: str | None, base: Path) -> dict | None:
    """The section's data (``None`` without ``causal.json``): ``{"method", "settings", "summary", "concepts"}``."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict) or not raw["methods"]:
        raise _malformed(path, "expected an object with a 'methods' object", _FIX)
    methods = raw["methods"]
    name = main if main in methods else next(iter(methods))
    by_direction = methods[name]
    if not isinstance(by_direction, dict) or "concept" not in by_direction:
        raise _malformed(path, f"method {name!r} has no 'concept' direction", _FIX)
    own = by_direction["concept"]
    rows = _rows(own.get("examples", []), path, base)
    controls = {d: _per_concept(s, path) for d, s in by_direction.items() if d != "concept"}
    known = {c["index"]: c for c in concepts}
    cards = []
    for k, row in _per_concept(own, path).items():
        target = row.get("target")
        cards.append({
            "index": k,
            "anchor": known[k]["anchor"] if k in known else None,
            "words": [str(w) for w in row.get("words") or []][:4],
            "target": " = ".join(map(str, target)) if isinstance(target, list) else "",
            "strength": _num(row.get("strength")),
            "steering": _num(row.get("steering_success")),
            "ablation": _num(row.get("ablation_success")),
            "controls": [{"name": d, "steering": _num(c.get(k, {}).get("steering_success"))}
                         for d, c in controls.items() if k in c],
            "rows": rows.get(k, [])[:N_ROWS],
        })
    summary = [{"name": d, **{m: _num(s.get(m)) for m in ("steering_success", "ablation_success", "specificity",
                                                          "fluency")}}
               for d, s in by_direction.items() if isinstance(s, dict)]
    settings = {key: own.get(key) for key in ("layer", "positions", "strength_factor", "n_images")}
    return {"method": name, "settings": settings, "summary": summary, "concepts": cards}
