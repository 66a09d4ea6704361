"""The report's "Traced to the image tokens" section, read and checked from a trace folder (``mmconcepts trace``:
``trace.json`` and ``maps.safetensors``, :mod:`mmconcepts.workflows.trace`).

For each word concept, the image-token concepts that feed it most (by mean contribution, gradient x activation
summed over the patches), each named by the value its top patches lie on where the trace knows it, else by its
words, and drawn over the traced image on which the word concept is most active: its contribution per patch.
Bad data raises a one-line :class:`~mmconcepts.errors.MMConceptsError`.
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.report.concept_cards import _malformed, _num

_FIX = "rerun mmconcepts trace to rewrite it"
#: Image concepts shown per word concept.
TOP = 3


def _maps(folder: Path) -> dict:
    from safetensors.torch import load_file

    path = folder / "maps.safetensors"
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise MMConceptsError(f"{path} is missing; {_FIX}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a truncated or foreign file
        raise MMConceptsError(f"cannot read {path} ({type(exc).__name__}); {_FIX}") from None


def _label(ranked: dict) -> str:
    value = ranked.get("value")
    if isinstance(value, list) and len(value) == 2:
        return f"on {value[1]}"
    return ", ".join(str(w) for w in (ranked.get("words") or [])[:3]) or "(no word)"


def trace_section(trace_dir, px: int = 160) -> dict:
    """The section's data: ``{"token", "word_layer", "image_layer", "n_images", "agreement", "rows", "names"}``, a
    row per word concept (image-token concept, for a trace to the vision tower: ``names`` says which) active on
    some traced image: ``{"index", "words", "image", "feeds": [{"concept", "label", "mean",
    "map"}]}`` (``map`` a data URI, or ``None`` when the image cannot be read)."""
    from mmconcepts.concepts.pooling import patch_grid
    from mmconcepts.files import read_json
    from mmconcepts.report.plots import overlay_png

    folder = Path(trace_dir)
    path = folder / "trace.json"
    data = read_json(path, _FIX)
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), list) or \
            not isinstance(data.get("images"), list):
        raise _malformed(path, "expected 'concepts' and 'images' lists", _FIX)
    maps, images, rows = _maps(folder), data["images"], []
    for c in data["concepts"]:
        if not isinstance(c, dict) or not isinstance(c.get("activation"), list) or \
                len(c["activation"]) != len(images) or not isinstance(c.get("ranking"), list):
            raise _malformed(path, "a word concept's entry is malformed", _FIX)
        acts = [_num(a) or 0.0 for a in c["activation"]]
        if not acts or max(acts) <= 0:
            continue
        i = acts.index(max(acts))
        image = images[i] if isinstance(images[i], dict) else {}
        file = image.get("image")
        file = str(folder / file) if isinstance(file, str) and file and not Path(file).is_absolute() else file
        patches = maps.get(f"patches.{i}")
        boxes = image.get("boxes") or []
        feeds = []
        for ranked in c["ranking"][:TOP]:
            j = ranked.get("concept") if isinstance(ranked, dict) else None
            if not isinstance(j, int) or patches is None or not 0 <= j < patches.shape[-1]:
                raise _malformed(path, "a ranked image concept is not in maps.safetensors", _FIX)
            src = None
            try:
                grid = patch_grid(patches[c["index"], :, j].tolist(), [{"box": b} for b in boxes])
                src = overlay_png(file, grid["grid"], grid["box"], size=px)
            except (OSError, ValueError, MMConceptsError, IndexError):  # no image or no boxes: the row, no map
                pass
            feeds.append({"concept": j, "label": _label(ranked), "mean": _num(ranked.get("mean")), "map": src})
        rows.append({"index": c.get("index"), "words": [str(w) for w in (c.get("words") or [])[:3]],
                     "image": Path(str(file)).name if file else "", "feeds": feeds})
    agreement = data.get("agreement") if isinstance(data.get("agreement"), dict) else None
    vision = data.get("pair") == "image->vision"
    names = {"upper": "image-token concept" if vision else "word concept",
             "lower": "vision concept" if vision else "image concept",
             "lowers": "vision-tower concepts" if vision else "image-token concepts",
             "title": "Traced to the vision tower" if vision else "Traced to the image tokens"}
    return {"token": data.get("token"), "word_layer": data.get("word_layer"), "image_layer": data.get("image_layer"),
            "n_images": data.get("n_images"), "agreement": agreement, "rows": rows, "names": names}
