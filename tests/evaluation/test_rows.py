"""The typed records the evaluations return, and the JSON that follows from them (docs/FORMAT.md's keys)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.attribution.heatmaps import HeatmapScores, HeatmapSettings, ReportMaps
from mmconcepts.evaluation.attribution.map_scores import MapScores
from mmconcepts.evaluation.causal.scores import CausalResult, CausalRow, CausalScores, metrics_row
from mmconcepts.evaluation.causal.settings import CausalSettings
from mmconcepts.evaluation.extended.collect import EXTENDED_METRICS, ExtendedRow, ExtendedSettings
from mmconcepts.evaluation.grounding.scoring import GroundingRow
from mmconcepts.evaluation.results import EvaluationResult
from mmconcepts.evaluation.rows import mean


def test_a_row_reads_as_the_mapping_of_the_metrics_that_apply():
    row = GroundingRow(overlap=0.25, grounding_precision_top1=0.5, coverage=math.nan)
    assert list(row) == ["overlap", "grounding_precision_top1", "coverage"] and len(row) == 3
    assert row["overlap"] == 0.25 and "clipscore_top1" not in row and row.get("purity") is None
    with pytest.raises(KeyError):
        row["purity"]  # None is absent, never a value
    assert math.isnan(row.to_json()["coverage"])  # nan is a value (no image had words)
    assert GroundingRow(overlap=0.25) == {"overlap": 0.25} and GroundingRow() == {}
    assert {**row, **CausalRow(fluency=1.0)}["fluency"] == 1.0  # the merged row of metrics.json
    with pytest.raises(AttributeError):
        row.overlap = 0.0  # frozen


def test_mean_skips_none_and_says_what_an_empty_mean_is():
    assert mean([1, None, 2]) == 1.5 and isinstance(mean([1, 2]), float)
    assert mean([]) is None and mean([None]) is None and math.isnan(mean([], empty=math.nan))


def _scores(direction="concept", image="/data/a.png"):
    return CausalScores(CausalRow(steering_success=0.5, fluency=1.0), n_concepts=1, n_images=2, direction=direction,
                        layer="norm", positions="token", strength_factor=16.0, ground_truth=True,
                        concepts=[{"concept": 0}], examples=[{"image": image, "before": "a", "after": "b"}])


def test_causal_scores_json_keeps_the_file_layout_and_links_without_mutating(tmp_path):
    scores = _scores(image=str(tmp_path / "data" / "a.png"))
    assert list(scores.to_json()) == ["steering_success", "fluency", "n_concepts", "n_images", "direction", "layer",
                                      "positions", "strength_factor", "ground_truth", "concepts", "examples"]
    assert scores["n_concepts"] == 1 and metrics_row(scores) == {"steering_success": 0.5, "fluency": 1.0}
    assert metrics_row({"fluency": 0.5, "n_concepts": 3}) == CausalRow(fluency=0.5)
    result = CausalResult({"semi-nmf": {"concept": scores, "random": _scores("random")}})
    written = result.to_json(tmp_path / "eval")
    assert written["methods"]["semi-nmf"]["concept"]["examples"][0]["image"] == str(Path("..") / "data" / "a.png")
    assert scores.examples[0]["image"] == str(tmp_path / "data" / "a.png")  # the scores themselves unchanged
    assert result.rows() == {"semi-nmf": CausalRow(steering_success=0.5, fluency=1.0)}
    assert result.rows("centred") == {}


def test_causal_settings_are_checked_once():
    assert CausalSettings(concept_indices=range(2), layer=3).concept_indices == (0, 1)
    assert CausalSettings(layer=3).layer == "3"
    for bad, message in ((dict(directions=("sideways",)), "unknown direction 'sideways'"),
                         (dict(n_images=0), "n_images"), (dict(seed=-1), "seed"),
                         (dict(strength_factor=math.inf), "strength_factor"), (dict(batch_size=0), "batch_size")):
        with pytest.raises(MMConceptsError, match=message):
            CausalSettings(**bad)


def test_heatmap_scores_json_has_the_optional_keys_only_when_set():
    empty = HeatmapScores(ground_truth=False, n_images=0, n_skipped=3)
    assert empty.to_json() == {"concept": "top-1", "ground_truth": False, "n_images": 0, "n_skipped": 3,
                               "methods": {}, "baselines": {}}
    full = HeatmapScores(ground_truth=True, n_images=2, n_skipped=0,
                         methods={"attribution": MapScores(0.5, 0.25, 2, seconds_per_image=0.1)},
                         baselines={"centre": MapScores(0.0, 0.1, 2)}, read_seconds=0.2, grid=(8, 8),
                         shown="attribution")
    data = full.to_json()
    assert list(data) == ["concept", "ground_truth", "n_images", "n_skipped", "methods", "baselines",
                          "read_seconds", "grid", "shown"]
    assert data["grid"] == [8, 8] and data["baselines"]["centre"] == {"pointing_game": 0.0, "energy_inside": 0.1,
                                                                       "n_images": 2}
    assert ReportMaps("attribution", [], []).to_json() == {"method": "attribution", "concepts": [],
                                                             "explanations": []}
    assert HeatmapSettings({"a": object(), "b": object()}).shown == "a"
    with pytest.raises(MMConceptsError, match="at least one map method"):
        HeatmapSettings(())
    with pytest.raises(MMConceptsError, match="batch_size"):
        HeatmapSettings(batch_size=0)


def test_extended_row_orders_rounds_and_drops_what_does_not_apply():
    row = ExtendedRow({"stability": 0.123456, "words_per_concept": 2, "overlap_strict": math.nan, "custom": 1.0})
    assert list(row) == ["words_per_concept", "stability", "custom"]  # EXTENDED_METRICS order, unknown keys last
    assert row["stability"] == 0.1235 and "overlap_strict" not in row
    assert EXTENDED_METRICS.index("words_per_concept") < EXTENDED_METRICS.index("stability")
    assert ExtendedSettings(fixed_words=[3]).fixed_words == (3,)
    with pytest.raises(MMConceptsError, match="fixed_words"):
        ExtendedSettings(fixed_words=(0,))


def test_evaluation_result_json_takes_typed_rows_as_their_metrics():
    result = EvaluationResult(token="circle", layer="norm", n_test=2, n_train=4, n_concepts=3, model="m",
                              main_method="semi-nmf", methods={"semi-nmf": GroundingRow(overlap=0.5)},
                              baselines={"random-direction": CausalRow(fluency=1.0)},
                              caption_accuracy={"exact": 1.0})
    data = result.to_json()
    assert data["methods"] == {"semi-nmf": {"overlap": 0.5}} and data["baselines"] == {"random-direction":
                                                                                      {"fluency": 1.0}}
    assert "heatmaps" not in data and data["caption_accuracy"] == {"exact": 1.0}  # unset: absent
    assert EvaluationResult.from_json(data).methods == data["methods"]
