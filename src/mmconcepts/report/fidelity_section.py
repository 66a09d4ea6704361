"""The report's "Fidelity inside the model" section, read and checked from ``metrics.json``'s ``fidelity``
(written by ``mmconcepts evaluate --fidelity``, :mod:`mmconcepts.evaluation.fidelity.splice`).

One row per method (the main one first): explained variance, L0, dead concepts, the KL divergence of the
next-token distribution with the reconstruction spliced in and the share of it recovered against zero- and
mean-ablation (``1 - KL_spliced / KL_ablated``), the cross-entropy loss recovered against the same two, and
the share of captions unchanged; above it the cross-entropy of the clean model and of the two ablations that
set the scale (mean ablation: the layer's mean state over every position), and their KL divergences.
Bad data raises a one-line :class:`~mmconcepts.errors.MMConceptsError`.
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.report.concept_cards import _malformed, _num, fmt

#: ``(key, label, best)`` of the section's columns, in order; ``best`` is ``"lower"``, ``"higher"``, ``"one"``
#: (closest to 1: a splice that moves the loss either way is off) or ``None`` (not ranked: fewer active concepts
#: is sparser, not better; a spliced loss below the clean one is no better fidelity than one above).
COLUMNS = (("explained_variance", "explained variance", "higher"), ("l0", "L0", None),
           ("dead_concepts", "dead concepts", "lower"), ("kl_divergence", "KL divergence", "lower"),
           ("kl_recovered_zero", "KL recovered (zero)", "higher"),
           ("kl_recovered_mean", "KL recovered (mean)", "higher"),
           ("ce_spliced", "CE spliced", None), ("ce_recovered_zero", "CE recovered (zero)", "one"),
           ("ce_recovered_mean", "CE recovered (mean)", "one"), ("captions_unchanged", "captions unchanged", "higher"))
#: The arrow of each kind of column.
ARROWS = {"lower": "\u2193", "higher": "\u2191", "one": "\u21921"}
_FIX = "rerun mmconcepts evaluate --fidelity to rewrite it"


def _fidelity(metrics, path: Path, main: str | None) -> dict | None:
    """The section's data (``None`` when ``metrics.json`` has no ``fidelity``): ``{"settings", "scale", "kl_scale",
    "columns", "rows"}``, each row ``{"name", "main", "cells": [{"text", "best"}]}``; the best method per column marked
    (:data:`COLUMNS`).

    Examples
    --------
    >>> data = _fidelity({"fidelity": {"layer": "norm", "n_images": 2, "ce_clean": 0.1, "methods": {
    ...     "pca": {"ce_recovered_mean": 1.2}, "semi-nmf": {"ce_recovered_mean": 0.9}}}}, Path("m.json"), "semi-nmf")
    >>> [(r["name"], r["cells"][8]) for r in data["rows"]]
    [('semi-nmf', {'text': '0.900', 'best': True}), ('pca', {'text': '1.200', 'best': False})]
    """
    raw = (metrics or {}).get("fidelity") if isinstance(metrics, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict):
        raise _malformed(path, "'fidelity' is not an object with a 'methods' object", _FIX)
    methods = raw["methods"]
    for name, row in methods.items():
        if not isinstance(row, dict):
            raise _malformed(path, f"'fidelity.methods.{name}' is not an object", _FIX)
    names = sorted(methods, key=lambda n: n != main)  # the main method first (stable)
    best = {}
    for key, _, rank in COLUMNS:
        values = [v for v in (_num(methods[n].get(key)) for n in names) if v is not None]
        if rank is not None and len(values) >= 2:
            best[key] = {"lower": min, "higher": max}[rank](values) if rank != "one" else \
                min(values, key=lambda v: abs(v - 1.0))
    rows = [{"name": str(n), "main": n == main,
             "cells": [{"text": fmt(methods[n].get(key)),
                        "best": key in best and _num(methods[n].get(key)) == best[key]} for key, _, _ in COLUMNS]}
            for n in names]
    settings = {key: raw.get(key) for key in ("layer", "positions", "n_images", "n_skipped")}
    scale = [{"name": label, "value": fmt(raw.get(key))}
             for key, label in (("ce_clean", "clean"), ("ce_zero", "zero-ablated"), ("ce_mean", "mean-ablated"),
                                ("ce_token_mean", "with the mean training feature")) if key in raw]
    kl_scale = [{"name": label, "value": fmt(raw.get(key))}
                for key, label in (("kl_zero", "zero-ablated"), ("kl_mean", "mean-ablated"),
                                   ("kl_token_mean", "with the mean training feature")) if key in raw]
    return {"settings": settings, "scale": scale, "kl_scale": kl_scale, "rows": rows,
            "columns": [{"label": label, "arrow": ARROWS.get(rank, ""),
                         "hint": f"{rank} is better" if rank in ("lower", "higher") else
                         ("closest to 1 is best" if rank == "one" else "not ranked")} for _, label, rank in COLUMNS]}
