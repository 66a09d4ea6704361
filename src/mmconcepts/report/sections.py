"""The pieces of the report, read and checked from the concepts and evaluation folders.

Each ``_name`` function turns one file of the folders (see ``docs/ARCHITECTURE.md``) into the plain values the
template shows (concept cards, metric table and headline cards, overlap heatmap, layer sweep, local
explanations, the run's facts), raising a one-line :class:`~mmconcepts.errors.MMConceptsError` on bad data.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from mmconcepts.errors import MMConceptsError

#: Metric columns in the order the tables show them (others follow, sorted), and how they are labelled.
METRICS = {
    "grounding_precision_top1": "Grounding precision@1",
    "grounding_precision_top3": "Grounding precision@3",
    "coverage": "Coverage",
    "purity": "Purity",
    "overlap": "Overlap",
    "clipscore_top1": "CLIPScore@1",
    "clipscore_top3": "CLIPScore@3",
    "bertscore_top1": "BERTScore@1",
    "bertscore_top3": "BERTScore@3",
}
#: Rows of metrics.json / sweep.json that are baselines, not methods.
BASELINES = frozenset({"rnd-words", "noise-imgs", "gt-captions"})
#: Metrics where a smaller value is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"overlap"})
#: The headline cards, in order, where the main method has them.
HEADLINE = ("grounding_precision_top1", "grounding_precision_top3", "coverage", "overlap", "clipscore_top1",
            "bertscore_top1")
MAX_HEADLINE = 5
#: Thumbnail display size in CSS pixels (stored at twice that for sharp rendering on high-DPI screens).
THUMB_PX = 96
EXPLAIN_PX = 128
EN_DASH = "\u2013"


# --- reading -------------------------------------------------------------------------------------------

def _read_json(path: Path, fix: str, required: bool = True):
    """The JSON at ``path``; ``None`` when absent and not required; MMConceptsError when missing or corrupt."""
    if not path.is_file():
        if required:
            raise MMConceptsError(f"{path} not found: {fix}")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise MMConceptsError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}): {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MMConceptsError(f"cannot read {path} ({exc}): {fix}") from None


def _malformed(path: Path, what: str, fix: str) -> MMConceptsError:
    return MMConceptsError(f"{path} is malformed ({what}): {fix}")


def _num(value) -> float | None:
    """A finite float, or ``None`` for anything else (absent, null, text, NaN, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value, digits: int = 3) -> str:
    """A number for people: ``digits`` decimals below 10 (fewer above), thousands separated, tiny values
    in scientific notation; an en dash when absent."""
    if isinstance(value, str):
        return value
    x = _num(value)
    if x is None:
        return EN_DASH
    if isinstance(value, int) or abs(x) >= 100:
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    if abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits if abs(x) < 10 else 1}f}"


def _load_activations(path: Path):
    """The ``N x K`` activations as a float32 numpy array, or ``None`` when the file is absent."""
    import numpy as np

    if not path.is_file():
        return None
    fix = "rerun mmconcepts learn to rewrite it"
    try:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                keys = list(f.keys())
                key = "activations" if "activations" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise _malformed(path, "no tensor named 'activations'", fix)
                array = f.get_tensor(key)
        except TypeError:  # a dtype numpy lacks (bfloat16): read it through torch
            import torch
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            key = "activations" if "activations" in tensors else next(iter(tensors))
            array = tensors[key].to(torch.float32).numpy()
    except MMConceptsError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a corrupt file
        raise MMConceptsError(f"{path} is not a readable safetensors file ({exc}): {fix}") from None
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise _malformed(path, f"'activations' has shape {tuple(array.shape)}, expected N x K", fix)
    return array


def _words(raw, path: Path, fix: str) -> list[dict]:
    """``[{"word", "score"}]`` from a list of dicts or plain strings."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _malformed(path, "'words' is not a list", fix)
    words = []
    for w in raw:
        if isinstance(w, dict):
            words.append({"word": str(w.get("word", "")), "score": _num(w.get("score"))})
        elif isinstance(w, str):
            words.append({"word": w, "score": None})
        else:
            raise _malformed(path, "a word is neither a string nor an object", fix)
    return words


def _word_bars(words: list[dict]) -> list[dict]:
    """Add ``pct`` (bar length, 0-100) to each word: its score relative to the concept's best score."""
    scores = [w["score"] for w in words if w["score"] is not None]
    hi = max(scores, default=0.0)
    lo = min(scores, default=0.0)
    for w in words:
        s = w["score"]
        if s is None:
            pct = 0.0
        elif hi > 0:
            pct = max(0.0, s) / hi * 100
        else:  # all scores <= 0: place them between the worst and the best
            pct = 100.0 if hi == lo else (s - lo) / (hi - lo) * 100
        w["pct"] = round(max(4.0, min(100.0, pct)), 1)
    return words


def _images(raw, path: Path, fix: str, limit: int, px: int, base: Path) -> list[dict]:
    from mmconcepts.report.plots import thumbnail

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _malformed(path, "'images' is not a list", fix)
    images = []
    for item in raw[:limit]:
        if isinstance(item, str):
            item = {"image": item}
        if not isinstance(item, dict):
            raise _malformed(path, "an image entry is not an object", fix)
        file = item.get("image")
        if isinstance(file, str) and file and not os.path.isabs(file):
            file = str(base / file)
        images.append({
            "id": "" if item.get("id") is None else str(item.get("id")),
            "caption": "" if item.get("caption") is None else str(item.get("caption")),
            "activation": _num(item.get("activation")),
            "path": "" if file is None else str(file),
            "thumb": thumbnail(file, 2 * px),
        })
    return images


def _concepts(concepts_dir: Path, grounding, activations, n_images: int = 5) -> list[dict]:
    import numpy as np

    from mmconcepts.report.plots import histogram_png

    path = concepts_dir / "grounding.json"
    fix = "rerun `mmconcepts learn` to rewrite it"
    if not isinstance(grounding, dict) or not isinstance(grounding.get("concepts"), list):
        raise _malformed(path, "expected an object with a 'concepts' list", fix)
    concepts = []
    seen = set()
    for pos, raw in enumerate(grounding["concepts"]):
        if not isinstance(raw, dict):
            raise _malformed(path, f"concept {pos} is not an object", fix)
        index = raw.get("index", pos)
        if isinstance(index, bool) or not isinstance(index, int):
            raise _malformed(path, f"concept {pos} has a non-integer index", fix)
        if index in seen:
            raise _malformed(path, f"concept index {index} appears twice", fix)
        seen.add(index)
        words = _word_bars(_words(raw.get("words"), path, fix))
        concept = {
            "index": index,
            "anchor": f"concept-{index}",
            "words": words,
            "title": " \u00b7 ".join(w["word"] for w in words[:3]) or f"concept {index}",
            "top": words[0]["word"] if words else "",
            "images": _images(raw.get("images"), path, fix, n_images, THUMB_PX, concepts_dir),
            "hist": None,
            "stats": None,
        }
        if activations is not None and 0 <= index < activations.shape[1]:
            column = activations[:, index]
            column = column[np.isfinite(column)]
            concept["hist"] = histogram_png(column[column != 0])
            concept["stats"] = {
                "n": int(column.size),
                "max": float(column.max()) if column.size else None,
                "mean": float(column.mean()) if column.size else None,
                "zero": float((column == 0).mean() * 100) if column.size else 0.0,
            }
        concepts.append(concept)
    if not concepts:
        raise _malformed(path, "it lists no concept", fix)
    return concepts


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
    (:func:`mmconcepts.evaluation.metrics.overlap_matrix`: row ``k`` normalised by ``|T_k|``)."""
    from mmconcepts.evaluation.metrics import overlap_matrix

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
            tops.append({
                "index": "" if index is None else str(index),
                "anchor": known["anchor"] if known else None,
                "activation": _num(c.get("activation")),
                "words": [w["word"] for w in words[:6]],
                "images": images,
            })
        out.append({
            "id": "" if item.get("id") is None else str(item.get("id")),
            "caption": "" if item.get("caption") is None else str(item.get("caption")),
            "references": refs[:3],
            "thumb": thumbnail(file, 2 * EXPLAIN_PX),
            "concepts": tops,
        })
    return out


# --- summary -------------------------------------------------------------------------------------------

def _facts(summary: dict, metrics) -> tuple[list[dict], list[dict]]:
    """The identity of the run (model, data, token, layer, method) and the fit's numbers."""
    data = summary.get("data")
    features = summary.get("features")
    if data is None and isinstance(features, str):
        manifest = Path(features) / "manifest.json"
        try:
            data = json.loads(manifest.read_text(encoding="utf-8")).get("data") if manifest.is_file() else None
        except (OSError, ValueError, AttributeError):
            data = None
    m = metrics if isinstance(metrics, dict) else {}
    ident = [
        ("Model", summary.get("model", m.get("model"))),
        ("Data", data),
        ("Token", summary.get("token", m.get("token"))),
        ("Layer", summary.get("layer", m.get("layer"))),
        ("Method", summary.get("method")),
        ("Features", features),
    ]
    numbers = [
        ("Concepts", summary.get("n_concepts")),
        ("Training samples", summary.get("n_samples")),
        ("Test samples", m.get("n_test")),
        ("Hidden size", summary.get("hidden_size")),
        ("Relative error", summary.get("relative_error")),
        ("Sparsity", summary.get("sparsity")),
        ("Iterations", summary.get("n_iter")),
        ("Fit time (s)", summary.get("seconds")),
    ]
    accuracy = m.get("caption_accuracy")  # ShapesWorld: how well the model captions the test images
    if isinstance(accuracy, dict):
        numbers += [(f"Caption {k}" if k != "exact" else "Exact captions", accuracy.get(k))
                    for k in ("exact", "shape", "colour", "size", "position")]
    ident = [{"label": k, "value": str(v)} for k, v in ident if v is not None and str(v) != ""]
    numbers = [{"label": k, "value": fmt(v)} for k, v in numbers if _num(v) is not None]
    return ident, numbers
