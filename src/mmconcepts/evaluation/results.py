"""The evaluation's output schema: what ``metrics.json`` holds, and how it is written, read and shown.

``evaluate`` writes it, ``sweep`` collects one per layer, the report reads it; all go through
:class:`EvaluationResult`, so its fields are the file's keys::

    {"format_version": 2, "token", "layer", "n_test", "n_train", "n_concepts", "model", "main_method",
     "settings": {...EvaluationSettings...}, "concepts": "<link>", "test_features": "<link>",
     "methods": {name: {metric: value}}, "baselines": {name: {metric: value}}, "caption_accuracy": {...},
     "heatmaps": {"concept": "top-1", "ground_truth", "n_images", "n_skipped", "grid": [rows, cols], "shown",
                  "methods": {map method: {pointing_game, energy_inside, n_images, seconds_per_image}},
                  "baselines": {centre | random-patch | object-mask: {pointing_game, energy_inside}}},
     "fidelity": {"layer", "positions", "n_images", "n_skipped", "n_samples", "n_positions", "ce_clean", "ce_zero",
                  "ce_mean", "kl_zero", "kl_mean", "ce_token_mean", "kl_token_mean",
                  "methods": {name: {explained_variance, l0, dead_concepts, kl_divergence, kl_recovered_zero,
                  kl_recovered_mean, ce_spliced, ce_recovered_zero, ce_recovered_mean, captions_unchanged}}}}

(``heatmaps`` only with ``evaluate --heatmaps``: :class:`~mmconcepts.evaluation.attribution.heatmaps.HeatmapScores`;
``fidelity`` only with ``evaluate --fidelity``: :class:`~mmconcepts.evaluation.fidelity.scores.FidelityResult`;
``caption_accuracy`` only when the caller measured it, as the demo does.)

A metric that does not apply is absent, never zero. :data:`METRIC_ORDER` is the order tables show them in.
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.extended.collect import EXTENDED_METRICS
from mmconcepts.files import read_json

METRIC_ORDER = ("overlap", "clipscore_top1", "clipscore_top3", "bertscore_top1", "bertscore_top3",
                "grounding_precision_top1", "grounding_precision_top3", "coverage", "purity", "patch_precision",
                "patch_coverage", "pointing",
                "steering_success", "ablation_success", "specificity", "fluency", "name_truth", "word_truth",
                "name_detection", "word_detection", "named_concepts") + EXTENDED_METRICS


@dataclass
class EvaluationResult:
    """The metrics of a concepts folder, its comparison methods and the baselines, on one test store.

    ``methods`` and ``baselines`` map a name to its row, ``{metric: value}``: a method's row merges its
    :class:`~mmconcepts.evaluation.grounding.scoring.GroundingRow`, its extended metrics and its
    :class:`~mmconcepts.evaluation.causal.scores.CausalRow`; a baseline's row is one of them. ``heatmaps`` is
    :class:`~mmconcepts.evaluation.attribution.heatmaps.HeatmapScores` as JSON, ``fidelity``
    :class:`~mmconcepts.evaluation.fidelity.scores.FidelityResult`.
    """

    token: str
    layer: str
    n_test: int
    n_train: int
    n_concepts: int
    model: str | None
    main_method: str
    settings: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    concepts: str | None = None
    concepts_absolute: str | None = None
    test_features: str | None = None
    test_features_absolute: str | None = None
    caption_accuracy: dict | None = None
    heatmaps: dict | None = None
    fidelity: dict | None = None

    def to_json(self) -> dict:
        """The file's content: every field that is set; a row (a typed row of :mod:`mmconcepts.evaluation.rows`
        or a dict read back) as ``{metric: value}`` of the metrics that apply."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["methods"] = {name: dict(row) for name, row in self.methods.items()}
        data["baselines"] = {name: dict(row) for name, row in self.baselines.items()}
        return {k: deepcopy(v) for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> "EvaluationResult":
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing or not isinstance(data.get("methods"), dict) or not isinstance(data.get("baselines"), dict):
            raise MMConceptsError(f"not a metrics file (missing {', '.join(missing) or 'methods/baselines'}); "
                                  "rerun mmconcepts evaluate")
        return cls(**{k: v for k, v in data.items() if k in names})

    def markdown(self) -> str:
        """The metrics as a markdown table (methods, then baselines)."""
        rows = {**self.methods, **self.baselines}
        columns = [m for m in METRIC_ORDER if any(m in r for r in rows.values())]
        lines = [f"# Concept evaluation: token '{self.token}', layer {self.layer}, {self.n_test} test samples", "",
                 "| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for name, row in rows.items():
            cells = [f"{row[c]:.3f}" if isinstance(row.get(c), (int, float)) else "–" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if self.heatmaps and (self.heatmaps.get("methods") or self.heatmaps.get("baselines")):
            from mmconcepts.evaluation.attribution.heatmaps import markdown_table

            lines += ["", *markdown_table(self.heatmaps)]
        if self.fidelity and self.fidelity.get("methods"):
            from mmconcepts.evaluation.fidelity.scores import markdown_table as fidelity_table

            lines += ["", *fidelity_table(self.fidelity)]
        return "\n".join(lines) + "\n"


def read_metrics(path: str | os.PathLike) -> EvaluationResult:
    """The ``metrics.json`` of an evaluation folder (or the file itself)."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    return EvaluationResult.from_json(read_json(file, "rerun mmconcepts evaluate"))
