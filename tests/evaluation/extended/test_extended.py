"""The extended metrics end to end on a tiny ShapesWorld run of the shipped captioner, and evaluate --extended."""

from __future__ import annotations

import json

import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.extended.collect import EXTENDED_METRICS, extended_metrics, reground_words


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_features
    from mmconcepts.concepts import ground
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("extended")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=60, seed=3, split="train")
    write_dataset(root / "test", n=24, seed=4, split="test")
    for split in ("train", "test"):
        extract(root / split, "circle", out=root / f"features-{split}", model=adapter, layers=["norm"],
                batch_size=32, mode="teacher", progress=False)  # the reference captions: no generation
    for method, k, params in (("semi-nmf", 4, {"max_iter": 20}), ("pca", 3, {})):  # stability refits alike
        learn(root / "features-train", "norm", method=method, n_concepts=k, out=root / method, seed=0, **params)
        ground(root / method, model=adapter)
    Z_test, test_meta = load_features(root / "features-test", "norm", "circle")
    return {"root": root, "adapter": adapter, "Z_test": Z_test, "test_meta": test_meta}


@pytest.fixture(scope="module")
def rows(run):
    return {m: extended_metrics(run["root"] / m, run["Z_test"], run["test_meta"], model=run["adapter"])
            for m in ("semi-nmf", "pca")}


def test_the_row_holds_every_kind_of_metric_rounded_and_in_range(run, rows):
    for method, row in rows.items():
        assert list(row) == [k for k in EXTENDED_METRICS if k in row], method  # documented keys, in order
        for key in ("words_per_concept", "empty_concepts", "overlap_strict", "grounding_precision_top1_strict",
                    "overlap_words3", "grounding_precision_top3_words10", "coverage_token", "stability",
                    "stability_halves", "probing_top1_colour", "probing_raw_colour", "probing_random1_colour"):
            assert key in row, (method, key)
        for key, value in row.items():
            assert value == round(value, 4), key
            if not key.startswith("words_per_concept"):
                assert 0.0 <= value <= 1.0, (key, value)
    assert rows["pca"]["stability"] == 1.0  # PCA's SVD on the same data does not depend on the seed


def test_the_word_metrics_follow_from_the_folder_and_its_regrounding(run, rows):
    from mmconcepts.evaluation.grounding import overlap as W
    from mmconcepts.evaluation.grounding.scoring import TestSet, score
    from mmconcepts.concepts.concept_set import load_concepts

    for method, row in rows.items():
        cs = load_concepts(run["root"] / method)
        words = cs.word_sets()
        assert row["words_per_concept"] == round(sum(len(set(w)) for w in words) / len(words), 4)
        loose = score(words, cs.encode(run["Z_test"]), TestSet(run["test_meta"]))
        if row["empty_concepts"] == 0:  # strict and loose agree when no concept is empty
            assert row["grounding_precision_top1_strict"] == loose["grounding_precision_top1"]
            assert row["overlap_strict"] == loose["overlap"]
        for n in (3, 10):
            fixed = reground_words(cs, run["adapter"], n)
            assert all(len(w) <= n for w in fixed)
            assert row[f"words_per_concept_words{n}"] == round(sum(map(len, fixed)) / len(fixed), 4)
            assert row[f"overlap_words{n}"] == round(W.overlap_strict(fixed), 4)


def test_regrounding_with_the_recorded_settings_gives_the_folder_words_back(run):
    from mmconcepts.concepts.concept_set import load_concepts

    for method in ("semi-nmf", "pca"):
        cs = load_concepts(run["root"] / method)
        recorded = cs.grounding["settings"]
        assert reground_words(cs, run["adapter"], recorded["n_words"], min_ratio=recorded["min_ratio"]) == \
            cs.word_sets()
        assert all(len(w) <= 1 for w in reground_words(cs, run["adapter"], 1))


def test_without_ground_truth_only_the_word_metrics_remain_and_no_model_is_needed(run, rows):
    plain = [{k: v for k, v in m.items() if k != "attributes"} for m in run["test_meta"]]
    row = extended_metrics(run["root"] / "semi-nmf", run["Z_test"], plain, model="/no/such/model",
                           fixed_words=(), stability=False)  # probing asked for, but nothing to probe
    assert set(row) == {"words_per_concept", "empty_concepts", "overlap_strict"}
    assert row == {k: rows["semi-nmf"][k] for k in row}


def test_evaluate_extended_merges_the_rows_of_the_methods_only(run, rows, tmp_path):
    from mmconcepts.cli import main
    from mmconcepts.evaluation.evaluate import EvaluationSettings

    out = tmp_path / "eval"
    assert main(["evaluate", "--concepts", str(run["root"] / "semi-nmf"), "--test-features",
                 str(run["root"] / "features-test"), "--out", str(out), "--methods", "semi-nmf",
                 "--baselines", "rnd-words", "--extended"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    main_row = metrics["methods"]["semi-nmf"]
    expected = rows["semi-nmf"]  # the same function on the same folder, test set and (recorded) model
    assert {k: main_row[k] for k in expected} == expected
    assert metrics["settings"]["extended"] is True
    assert not set(EXTENDED_METRICS) & set(metrics["baselines"]["rnd-words"])
    header = (out / "metrics.md").read_text().splitlines()[2]
    assert "stability" in header and header.index("purity") < header.index("words_per_concept")
    with pytest.raises(MMConceptsError, match="extended"):
        EvaluationSettings(extended="yes")
