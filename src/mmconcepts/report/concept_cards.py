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
    "steering_success": "Steering success",
    "ablation_success": "Ablation success",
    "specificity": "Specificity",
    "fluency": "Fluency",
    "name_truth": "Model-written name true",
    "word_truth": "Unembedding word true",
    "name_detection": "Name detection",
    "word_detection": "Word detection",
    "named_concepts": "Concepts named",
}
#: Rows of metrics.json / sweep.json that are baselines, not methods.
BASELINES = frozenset({"rnd-words", "noise-imgs", "gt-captions", "centred-direction", "random-direction", "diffmean"})
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
    in scientific notation; an en dash when absent.

    Examples
    --------
    >>> [fmt(v) for v in (0.97734, 12.5, 1234, 0.00004, None)]
    ['0.977', '12.5', '1,234', '4.0e-05', '–']
    """
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
    """The ``N x K`` activations as a float32 numpy array, or ``None`` when the file is absent (or stored sparse
    and larger than :data:`~mmconcepts.concepts.concept_set.DENSE_LIMIT`: the cards then show no histogram)."""
    import numpy as np

    if not path.is_file():
        return None
    fix = "rerun mmconcepts learn to rewrite it"
    try:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                keys = list(f.keys())
                if "crow_indices" in keys:  # the sparse form: dense when small enough, else no statistics
                    from mmconcepts.concepts.activations import read_activations
                    from mmconcepts.concepts.concept_set import DENSE_LIMIT

                    A = read_activations(path, fix)
                    return A.to_dense().numpy() if A.shape[0] * A.shape[1] <= DENSE_LIMIT else None
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
    """The thumbnails of image entries: each the original (its link from ``base``, else the absolute path it
    had when written, ``image_absolute``), else the copy a concepts folder carries (``thumbnail``, from
    ``learn --copy-images``), else a placeholder that says "missing"."""
    from mmconcepts.concepts.images import image_exists
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
        shown = file
        if isinstance(file, str) and file and not image_exists(file):
            fallback, carried = item.get("image_absolute"), item.get("thumbnail")
            if isinstance(fallback, str) and fallback and image_exists(fallback):
                file = shown = fallback
            elif isinstance(carried, str) and carried and image_exists(base / carried):
                shown = str(base / carried)
        images.append({
            "id": "" if item.get("id") is None else str(item.get("id")),
            "caption": "" if item.get("caption") is None else str(item.get("caption")),
            "activation": _num(item.get("activation")),
            "path": "" if file is None else str(file),
            "thumb": thumbnail(shown, 2 * px, box=_box(item.get("box")) if shown == file else None),
        })
    return images


def _box(raw) -> list[float] | None:
    """An image entry's patch box (image-token concepts), or ``None`` when absent or not four numbers."""
    if isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) for v in raw):
        return [float(v) for v in raw]
    return None


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


# --- summary -------------------------------------------------------------------------------------------

def _facts(summary: dict, metrics, concepts_dir: Path | None = None) -> tuple[list[dict], list[dict]]:
    """The identity of the run (model, data, token, layer, method) and the fit's numbers; the feature store and
    its data are found through the folders' links (relative to ``concepts_dir``)."""
    from mmconcepts.files import resolve_field

    data = summary.get("data")
    features = summary.get("features")
    if isinstance(features, str) and concepts_dir is not None:
        features = str(resolve_field(summary, "features", concepts_dir))
    if data is None and isinstance(features, str):
        manifest = Path(features) / "manifest.json"
        try:
            data = json.loads(manifest.read_text(encoding="utf-8")).get("data") if manifest.is_file() else None
            if isinstance(data, dict):  # a run record: the dataset file, found from the store
                data = str(resolve_field(data, "source", features)) if data.get("source") else None
        except (OSError, ValueError, AttributeError, MMConceptsError):
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
