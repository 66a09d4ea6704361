"""The report's evaluation sections, read and checked from an evaluation folder: the metric table and
headline cards (``metrics.json``), the overlap heatmap (``overlap.json``), the layer sweep (``sweep.json``)
and the local explanations (``explanations.json``). Each raises a one-line
:class:`~mmconcepts.errors.MMConceptsError` on bad data; the concept cards and the run's facts are in
:mod:`mmconcepts.report.concept_cards`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmconcepts.report.concept_cards import (BASELINES, EN_DASH, EXPLAIN_PX, HEADLINE, LOWER_IS_BETTER, MAX_HEADLINE,
                                        METRICS, THUMB_PX, _images, _malformed, _num, _read_json, _words, fmt)


# --- metrics -------------------------------------------------------------------------------------------

def _canonical(name: str) -> str:
    return str(name).lower().replace("_", "-").replace(" ", "-")


def _find_method(names, method) -> str | None:
    if method is None:
        return None
    for name in names:
        if _canonical(name) == _canonical(method):
            return name
    return None


def _metric_columns(rows: list[dict]) -> list[dict]:
    present: list[str] = []
    for row in rows:
        for key in row["values"]:
            if key not in present:
                present.append(key)
    ordered = [m for m in METRICS if m in present] + sorted(m for m in present if m not in METRICS)
    return [{"key": m, "label": METRICS.get(m, m), "lower": m in LOWER_IS_BETTER} for m in ordered]


def _metrics(metrics, path: Path, main: str | None) -> dict | None:
    """Rows (methods then baselines), columns, best per column among the methods, and the headline cards."""
    if metrics is None:
        return None
    fix = "rerun mmconcepts evaluate to rewrite it"
    if not isinstance(metrics, dict):
        raise _malformed(path, "expected an object", fix)
    rows = []
    for group, baseline in (("methods", False), ("baselines", True)):
        block = metrics.get(group) or {}
        if not isinstance(block, dict):
            raise _malformed(path, f"'{group}' is not an object", fix)
        for name, values in block.items():
            if not isinstance(values, dict):
                raise _malformed(path, f"'{group}.{name}' is not an object", fix)
            rows.append({"name": str(name), "baseline": baseline, "values": values, "main": False})
    main_name = _find_method([r["name"] for r in rows if not r["baseline"]], main)
    if main_name is None and main is None:
        main_name = next((r["name"] for r in rows if not r["baseline"]), None)
    for row in rows:
        row["main"] = not row["baseline"] and row["name"] == main_name
    rows.sort(key=lambda r: (r["baseline"], not r["main"]))  # main method first, baselines last (stable)
    columns = _metric_columns(rows)
    for col in columns:
        key = col["key"]
        values = [_num(r["values"].get(key)) for r in rows if not r["baseline"]]
        values = [v for v in values if v is not None]
        col["best"] = (min(values) if col["lower"] else max(values)) if len(values) >= 2 else None
    table = []
    for row in rows:
        cells = []
        for col in columns:
            raw = row["values"].get(col["key"])
            v = _num(raw)
            best = not row["baseline"] and v is not None and col["best"] is not None and v == col["best"]
            cells.append({"text": fmt(raw), "best": best})
        table.append({"name": row["name"], "baseline": row["baseline"], "main": row["main"], "cells": cells})

    cards = []
    main_row = next((r for r in rows if r["main"]), None)
    if main_row is not None:
        methods = [r for r in rows if not r["baseline"]]
        for key in HEADLINE:
            value = _num(main_row["values"].get(key))
            if value is None or len(cards) >= MAX_HEADLINE:
                continue
            lower = key in LOWER_IS_BETTER
            others = [_num(r["values"].get(key)) for r in methods]
            others = [v for v in others if v is not None]
            rank = 1 + sum((v < value) if lower else (v > value) for v in others)
            cards.append({
                "label": METRICS[key],
                "value": fmt(value),
                "hint": "lower is better" if lower else "higher is better",
                "rank": rank if len(others) >= 2 else None,
                "n_methods": len(others),
                "others": [{"name": r["name"], "value": fmt(r["values"].get(key)), "baseline": r["baseline"]}
                           for r in rows if r is not main_row and _num(r["values"].get(key)) is not None],
            })
    return {"columns": columns, "rows": table, "cards": cards, "main": main_name,
            "n_test": metrics.get("n_test") if _num(metrics.get("n_test")) is not None else None}


# --- overlap -------------------------------------------------------------------------------------------

def word_overlap(concepts: list[dict]) -> list[list[float]]:
    """The overlap matrix of the concepts' grounded words, in the convention of ``overlap.json``
    (:func:`mmconcepts.evaluation.grounding.overlap.overlap_matrix`: row ``k`` normalised by ``|T_k|``).

    Examples
    --------
    >>> word_overlap([{"words": [{"word": "red"}, {"word": "left"}]}, {"words": [{"word": "red"}]}])
    [[1.0, 0.5], [1.0, 1.0]]
    """
    from mmconcepts.evaluation.grounding.overlap import overlap_matrix

    return overlap_matrix([{w["word"] for w in c["words"]} for c in concepts])


def _overlap(concepts: list[dict], overlap, path: Path, main: str | None) -> dict:
    from mmconcepts.report.plots import heatmap_png

    matrix, source, method = None, None, None
    if isinstance(overlap, dict) and overlap:
        method = _find_method(overlap, main) or (next(iter(overlap)) if main is None else None)
        candidate = overlap.get(method) if method is not None else None
        k = len(concepts)
        if (isinstance(candidate, list) and len(candidate) == k
                and all(isinstance(r, list) and len(r) == k for r in candidate)
                and all(_num(v) is not None for r in candidate for v in r)):
            matrix, source = [[float(v) for v in r] for r in candidate], f"{path.name} ({method})"
    elif overlap is not None:
        raise _malformed(path, "expected an object of K x K matrices", "rerun mmconcepts evaluate to rewrite it")
    if matrix is None:
        matrix, source = word_overlap(concepts), "computed from the grounded words"
    k = len(concepts)
    off = [matrix[i][j] for i in range(k) for j in range(k) if i != j]
    sets = [{w["word"] for w in c["words"]} for c in concepts]
    pairs = sorted(((max(matrix[i][j], matrix[j][i]), i, j) for i in range(k) for j in range(i + 1, k)),
                   reverse=True)
    top_pairs = [{"a": concepts[i], "b": concepts[j], "value": fmt(v),
                  "shared": sorted(sets[i] & sets[j])} for v, i, j in pairs[:6] if v > 0]
    png, width = heatmap_png(matrix, [str(c["index"]) for c in concepts])
    return {
        "png": png,
        "width": width,
        "source": source,
        "mean": fmt(sum(off) / len(off)) if off else EN_DASH,
        "pairs": top_pairs,
    }


# --- layer sweep ---------------------------------------------------------------------------------------

def _sweep(eval_dir: Path, main: str | None) -> dict | None:
    from mmconcepts.report.plots import file_data_uri, sweep_png

    sweep = _read_json(eval_dir / "sweep.json", "rerun mmconcepts sweep to rewrite it", required=False)
    png = None
    if sweep is not None:
        if not isinstance(sweep, dict) or not isinstance(sweep.get("layers"), list) \
                or not isinstance(sweep.get("metrics"), dict):
            raise _malformed(eval_dir / "sweep.json", "expected 'layers' and 'metrics'",
                             "rerun mmconcepts sweep to rewrite it")
        metrics = {str(m): v for m, v in sweep["metrics"].items() if isinstance(v, dict)}
        metrics = {m: {str(k): s for k, s in v.items() if isinstance(s, list)} for m, v in metrics.items()}
        swept = sweep.get("method")
        try:
            png = sweep_png([str(layer) for layer in sweep["layers"]], metrics,
                            _find_method(metrics, main) or _find_method(metrics, swept) or main, labels=METRICS,
                            baselines=BASELINES)
        except (ValueError, TypeError):
            png = None
    if png is None and (eval_dir / "sweep.png").is_file():
        png = file_data_uri(eval_dir / "sweep.png")
    if png is None:
        return None
    return {"png": png, "layers": [str(layer) for layer in (sweep or {}).get("layers", [])]}


# --- local explanations --------------------------------------------------------------------------------

def _explanations(raw, path: Path, concepts: list[dict], n: int, base: Path) -> list[dict]:
    from mmconcepts.report.concept_maps import overlay_entry
    from mmconcepts.report.plots import thumbnail

    if raw is None or n <= 0:
        return []
    fix = "rerun mmconcepts evaluate to rewrite it"
    if not isinstance(raw, list):
        raise _malformed(path, "expected a list", fix)
    by_index = {c["index"]: c for c in concepts}
    out = []
    for item in raw[:n]:
        if not isinstance(item, dict):
            raise _malformed(path, "an explanation is not an object", fix)
        file = item.get("image")
        if isinstance(file, str) and file and not os.path.isabs(file):
            file = str(base / file)
        refs = item.get("references") or []
        refs = [str(r) for r in refs] if isinstance(refs, list) else [str(refs)]
        tops = []
        for c in (item.get("concepts") or [])[:3]:
            if not isinstance(c, dict):
                raise _malformed(path, "an explanation's concept is not an object", fix)
            index = c.get("index")
            known = by_index.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
            words = _words(c.get("words"), path, fix) if c.get("words") is not None else \
                (known["words"] if known else [])
            images = _images(c.get("images"), path, fix, 3, THUMB_PX // 2 + 8, base) if c.get("images") \
                else [dict(im) for im in (known["images"][:3] if known else [])]
            if known:  # mmconcepts evaluate stores bare paths: take their captions from grounding.json
                captions = {im["path"]: im["caption"] for im in known["images"]}
                for im in images:
                    im["caption"] = im["caption"] or captions.get(im["path"], "")
            top = {
                "index": "" if index is None else str(index),
                "anchor": known["anchor"] if known else None,
                "activation": _num(c.get("activation")),
                "words": [w["word"] for w in words[:6]],
                "images": images,
            }
            if isinstance(c.get("heatmap"), dict) and file:  # image-token concepts: their own activation per patch
                _, src = overlay_entry({**c["heatmap"], "image": file}, base, path, EXPLAIN_PX)
                if src:
                    top["map"] = src
            tops.append(top)
        out.append({
            "id": "" if item.get("id") is None else str(item.get("id")),
            "caption": "" if item.get("caption") is None else str(item.get("caption")),
            "references": refs[:3],
            "thumb": thumbnail(file, 2 * EXPLAIN_PX),
            "concepts": tops,
        })
    return out
