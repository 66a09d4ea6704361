"""The evaluation folder: what an evaluation computed (:class:`EvaluationOutputs`) and how it is written.

:func:`write_folder` writes ``metrics.json`` and ``metrics.md``
(:class:`~mmconcepts.evaluation.results.EvaluationResult`), ``overlap.json`` (each method's overlap matrix),
``explanations.json`` (the first test samples' top concepts), and with the causal evaluation ``causal.json``
(:class:`~mmconcepts.evaluation.causal.scores.CausalResult`), with the concept maps ``maps.json``
(:class:`~mmconcepts.evaluation.attribution.heatmaps.ReportMaps`). Paths in them are relative to the folder.
The layout of each file is docs/FORMAT.md's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmconcepts.evaluation.results import EvaluationResult
from mmconcepts.files import link, write_json

if TYPE_CHECKING:
    from mmconcepts.evaluation.attribution.heatmaps import ReportMaps
    from mmconcepts.evaluation.autointerp.scores import AutointerpResult
    from mmconcepts.evaluation.causal.scores import CausalResult

__all__ = ["EvaluationOutputs", "MAX_OVERLAP_MATRIX", "explanations", "write_folder"]

#: Above this many concepts ``overlap.json`` holds ``null`` for the method instead of its K x K matrix.
MAX_OVERLAP_MATRIX = 2048


@dataclass(frozen=True)
class EvaluationOutputs:
    """Everything one evaluation computed, before it is written.

    Parameters
    ----------
    result : the content of ``metrics.json``.
    folders : ``{method: ConceptSet}``, the concepts of every compared method (the main one included).
    explanations : the local explanations of the first test samples (``explanations.json``).
    causal : the causal evaluation (``causal.json``), if run.
    maps : the report's concept maps (``maps.json``), if drawn.
    autointerp : the concepts' model-written names and their scores (``autointerp.json``), if run.
    """

    result: EvaluationResult
    folders: dict
    explanations: list[dict]
    causal: CausalResult | None = None
    maps: ReportMaps | None = None
    autointerp: AutointerpResult | None = None


def explanations(concepts, test_activations, test_meta: list[dict], n: int, out: Path) -> list[dict]:
    """The first ``n`` test samples with their 3 most activated concepts (images relative to ``out``); for
    image-token rows the first ``n`` images, by their patches' activations pooled as ``concepts`` says, each
    concept with its map
    (:func:`~mmconcepts.concepts.pooling.patch_grid`)."""
    from mmconcepts.concepts.pooling import image_groups, is_image_rows
    from mmconcepts.explanations import image_top_concepts, top_concepts

    groups = image_groups(test_meta)[:n] if is_image_rows(test_meta) else None
    rows = []
    for i, m in enumerate([test_meta[g[0]] for g in groups] if groups else test_meta[:n]):
        found = image_top_concepts(test_activations[groups[i]], [test_meta[r] for r in groups[i]], concepts, 3) \
            if groups else top_concepts(test_activations[i], concepts, 3)
        tops = [{**c, "images": [link(im, out) for im in c["images"]]} for c in found]
        rows.append({"id": m["id"], "image": link(m["image"], out), "caption": m["caption"],
                     "references": m.get("references", []), "concepts": tops})
    return rows


def write_folder(tmp: Path, out: Path, outputs: EvaluationOutputs) -> None:
    """Write ``outputs`` into ``tmp``, the folder that becomes ``out`` (paths stored relative to ``out``)."""
    from mmconcepts.evaluation.grounding.overlap import overlap_matrix

    # the K x K matrix for the report's heatmap; a large dictionary's (an imported 100k-latent SAE) is not written
    overlaps = {m: overlap_matrix([set(w) for w in f.word_sets()]) if f.n_concepts <= MAX_OVERLAP_MATRIX else None
                for m, f in outputs.folders.items()}
    write_json(tmp / "metrics.json", outputs.result.to_json(), indent=2)
    (tmp / "metrics.md").write_text(outputs.result.markdown(), encoding="utf-8")
    write_json(tmp / "overlap.json", {"methods": overlaps}, indent=None)
    write_json(tmp / "explanations.json", {"explanations": outputs.explanations})
    if outputs.maps is not None:
        write_json(tmp / "maps.json", outputs.maps.to_json(), indent=None)
    if outputs.causal is not None:
        write_json(tmp / "causal.json", outputs.causal.to_json(out), indent=1)
    if outputs.autointerp is not None:
        write_json(tmp / "autointerp.json", outputs.autointerp.to_json(), indent=1)
