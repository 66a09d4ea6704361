"""The concept maps of the report: each concept's top images with its map, and each local explanation's
image with the maps of its top concepts, read from the evaluation folder's ``maps.json`` (written by
``mmconcepts evaluate --heatmaps``; :func:`mmconcepts.evaluation.attribution.heatmaps.report_maps`).

The maps are drawn over their images here (:func:`~mmconcepts.report.plots.overlay_png`) and embedded as data
URIs, as a second row under each concept's top images: visible without any script.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmconcepts.report.concept_cards import THUMB_PX, _malformed, _read_json

__all__ = ["attach_maps", "overlay_entry", "read_maps"]

FIX = "rerun mmconcepts evaluate --heatmaps to rewrite it"


def read_maps(eval_dir) -> dict | None:
    """The content of ``eval_dir/maps.json`` (``None`` when absent), checked."""
    if eval_dir is None:
        return None
    path = Path(eval_dir) / "maps.json"
    raw = _read_json(path, FIX, required=False)
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("concepts", []), list) \
            or not isinstance(raw.get("explanations", []), list):
        raise _malformed(path, "expected an object with 'concepts' and 'explanations' lists", FIX)
    return raw


def _key(path) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def overlay_entry(entry: dict, base: Path, path: Path, px: int) -> tuple[str | None, str | None]:
    """``(file key, data URI)`` of one map entry drawn over its image; ``(None, None)`` when unreadable."""
    from mmconcepts.report.plots import overlay_png

    if not isinstance(entry, dict) or not isinstance(entry.get("grid"), list) or not isinstance(entry.get("box"),
                                                                                               list):
        raise _malformed(path, "a map has no grid or box", FIX)
    file = entry.get("image")
    if not isinstance(file, str) or not file:
        return None, None
    file = file if os.path.isabs(file) else str(base / file)
    try:
        return _key(file), overlay_png(file, entry["grid"], entry["box"], size=px)
    except (OSError, ValueError):  # a missing or unreadable image: the report still builds, without this map
        return _key(file), None


def attach_maps(concepts: list[dict], explanations: list[dict], raw: dict | None, eval_dir) -> str | None:
    """Add ``"maps"`` (one data URI or ``None`` per top image, in the card's order) to every concept card that
    has maps, and ``"map"`` to every concept of a local explanation that has one; returns the maps' method
    (``None`` without ``maps.json``)."""
    if not raw:
        return None
    base = Path(eval_dir)
    path = base / "maps.json"
    cards = {c["index"]: c for c in concepts}
    for item in raw.get("concepts", []):
        if not isinstance(item, dict) or item.get("index") not in cards:
            continue
        card = cards[item["index"]]
        drawn = dict(overlay_entry(entry, base, path, 2 * THUMB_PX) for entry in item.get("images") or [])
        card["maps"] = [drawn.get(_key(im["path"])) if im.get("path") else None for im in card["images"]]
        if not any(card["maps"]):
            card.pop("maps")
    from mmconcepts.report.concept_cards import EXPLAIN_PX

    by_id = {str(e.get("id")): e for e in raw.get("explanations", []) if isinstance(e, dict)}
    for shown in explanations:
        entry = by_id.get(shown["id"])
        if entry is None:
            continue
        for c in entry.get("concepts") or []:
            if not isinstance(c, dict):
                raise _malformed(path, "an explanation's map is not an object", FIX)
            _, src = overlay_entry({**c, "image": entry.get("image")}, base, path, EXPLAIN_PX)
            for top in shown["concepts"]:
                if top["index"] == str(c.get("index")) and src:
                    top["map"] = src
    return str(raw.get("method") or "")
