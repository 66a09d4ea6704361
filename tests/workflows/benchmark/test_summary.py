"""The benchmark's statistics by hand: Student-t intervals, the tables over runs, which methods are apart."""

import math

import pytest

from mmconcepts.workflows.benchmark.summary import apart, interval, summarize, table
from mmconcepts.workflows.benchmark.tables import cell_text, markdown

#: Student's t quantiles t(0.975, df) from the printed tables.
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 11: 2.2010}


def test_interval_is_mean_plus_minus_t_times_standard_error():
    # values 1, 2, 3: mean 2, s = 1, half-width t(0.975, 2) / sqrt(3)
    got = interval([1.0, 2.0, 3.0])
    half = T975[2] / math.sqrt(3)
    assert got["n"] == 3 and got["mean"] == 2.0
    assert got["ci95"] == pytest.approx([2 - half, 2 + half], abs=2e-4)
    # twelve runs (4 tokens x 3 seeds): 0.9 six times and 1.0 six times; s = sqrt(12 * 0.0025 / 11)
    values = [0.9] * 6 + [1.0] * 6
    s = math.sqrt(12 * 0.05 ** 2 / 11)
    got = interval(values)
    assert got["mean"] == 0.95 and got["n"] == 12
    assert got["ci95"] == pytest.approx([0.95 - T975[11] * s / math.sqrt(12), 0.95 + T975[11] * s / math.sqrt(12)],
                                        abs=2e-4)


def test_interval_of_few_or_equal_values():
    assert interval([0.7, 0.7, 0.7]) == {"mean": 0.7, "ci95": [0.7, 0.7], "n": 3}
    assert interval([0.5]) == {"mean": 0.5, "ci95": None, "n": 1}
    assert interval([]) == {"mean": None, "ci95": None, "n": 0}
    assert interval([0.2, None, float("nan"), 0.4, True])["n"] == 2  # absent and non-finite values left out
    lo, hi = interval([0.0, 1.0])["ci95"]  # two values: t(0.975, 1) * s / sqrt(2), s = sqrt(0.5)
    assert hi - 0.5 == pytest.approx(T975[1] * math.sqrt(0.5) / math.sqrt(2), abs=2e-4) and lo == -hi + 1


def _run(token, seed, method, **metrics):
    return {"token": token, "seed": seed, "n_concepts": 5, "method": method, "metrics": metrics}


def test_table_pools_runs_per_row_and_counts_what_each_metric_has():
    runs = [_run("circle", 0, "a", overlap=0.1, coverage=0.8), _run("star", 0, "a", overlap=0.3),
            _run("circle", 0, "b", overlap=0.2, coverage=0.6),
            {"token": "circle", "seed": 0, "n_concepts": 5, "method": "baselines",
             "baselines": {"rnd-words": {"overlap": 0.0}, "gt-captions": {"grounding_precision_top1": 0.9}}},
            {"token": "star", "seed": 0, "n_concepts": 5, "method": "b", "skipped": "why"}]
    got = table(runs, ["a", "b", "rnd-words", "gt-captions"])
    assert list(got) == ["a", "b", "rnd-words", "gt-captions"]
    assert got["a"]["overlap"]["mean"] == 0.2 and got["a"]["overlap"]["n"] == 2
    assert got["a"]["coverage"] == {"mean": 0.8, "ci95": None, "n": 1}
    assert got["b"]["overlap"]["n"] == 1  # the skipped run counts nowhere
    assert list(got["a"]) == ["overlap", "coverage"]  # metrics.json's order
    assert got["gt-captions"] == {"grounding_precision_top1": {"mean": 0.9, "ci95": None, "n": 1}}


def test_apart_names_the_best_and_those_its_interval_overlaps():
    summary = {
        "a": {"precision": {"mean": 0.85, "ci95": [0.80, 0.90], "n": 4},
              "overlap": {"mean": 0.10, "ci95": [0.05, 0.15], "n": 4}},
        "b": {"precision": {"mean": 0.90, "ci95": [0.86, 0.94], "n": 4},
              "overlap": {"mean": 0.30, "ci95": [0.25, 0.35], "n": 4}},
        "c": {"precision": {"mean": 0.55, "ci95": [0.50, 0.60], "n": 4}},
        "rnd-words": {"precision": {"mean": 0.99, "ci95": [0.98, 1.0], "n": 4}},
    }
    got = apart(summary, ["a", "b", "c"])  # baselines are not compared
    assert got["precision"] == {"best": "b", "lower_is_better": False, "cannot_tell_apart": ["a"], "behind": ["c"]}
    assert got["overlap"] == {"best": "a", "lower_is_better": True, "cannot_tell_apart": [], "behind": ["b"]}
    # a method without an interval cannot be told apart from anything
    summary["c"]["overlap"] = {"mean": 0.9, "ci95": None, "n": 1}
    assert apart(summary, ["a", "b", "c"])["overlap"]["cannot_tell_apart"] == ["c"]


class _Settings:
    tokens, seeds, methods, baselines, n_concepts = ("circle", "star"), (0, 1), ("a", "b"), ("rnd-words",), (5,)
    method_names = methods

    def to_json(self):
        return {"tokens": list(self.tokens), "seeds": list(self.seeds), "methods": list(self.methods),
                "baselines": list(self.baselines), "n_concepts": list(self.n_concepts), "n_train": 10,
                "n_test": 5, "data": None, "test_data": None, "layer": "norm", "model": {"model": None}}


def test_summarize_and_markdown_say_where_methods_differ():
    runs = []
    for token, base in (("circle", 0.0), ("star", 0.02)):
        for seed in (0, 1):
            runs.append(_run(token, seed, "a", grounding_precision_top1=0.90 + base + 0.01 * seed))
            runs.append(_run(token, seed, "b", grounding_precision_top1=0.50 + base + 0.01 * seed))
            runs[-1]["seconds"] = {"learn": 1.5}
    result = summarize(runs, _Settings(), extraction_s={"seed0": 10.0}, wall_s=20.0)
    a = result["summary"]["a"]["grounding_precision_top1"]
    assert a["n"] == 4 and a["mean"] == pytest.approx((0.90 + 0.91 + 0.92 + 0.93) / 4, abs=1e-4)
    assert a["ci95"][0] < a["mean"] < a["ci95"][1]
    assert result["per_token"]["5"]["star"]["a"]["grounding_precision_top1"]["n"] == 2
    assert result["apart"]["5"]["grounding_precision_top1"]["behind"] == ["b"]
    assert result["timings"] == {"extraction_s": {"seed0": 10.0}, "cells_s": {"learn": 6.0}, "wall_s": 20.0}
    text = markdown(result)
    assert f"**{cell_text(a)}**" in text and "its interval overlaps no other method's" in text
    assert "### star" in text and "Time: extraction 10 s; cells: learn 6 s" in text


def test_reference_metrics_are_not_ranked_and_ties_are_all_marked():
    same = {"mean": 0.9, "ci95": [0.85, 0.95], "n": 4}
    summary = {"a": {"probing_raw_colour": same, "words_per_concept": same, "coverage": same},
               "b": {"probing_raw_colour": same, "words_per_concept": {**same, "mean": 2.0}, "coverage": same},
               "rnd-words": {"coverage": {**same, "mean": 0.95}}}
    got = apart(summary, ["a", "b"])
    assert list(got) == ["coverage"]  # the raw-feature ceiling and word counts rank nothing
    assert got["coverage"]["best"] == "a" and got["coverage"]["cannot_tell_apart"] == ["b"]
    from mmconcepts.workflows.benchmark.tables import metric_table

    lines = metric_table(summary, ["a", "b", "rnd-words"], ["coverage"], best=got, baselines=["rnd-words"])
    assert lines[2] == "| coverage | **0.900 [0.850, 0.950]** | **0.900 [0.850, 0.950]** | 0.950 [0.850, 0.950] |"


def test_fidelity_columns_are_ordered_and_ranked_by_their_direction():
    runs = [_run(t, 0, m, coverage=0.5, fidelity_captions_unchanged=0.9, fidelity_kl_divergence=kl,
                 fidelity_l0=l0, fidelity_explained_variance=0.8)
            for t in ("circle", "star") for m, kl, l0 in (("a", 0.1, 3.0), ("b", 0.5 + 0.01 * len(t), 9.0))]
    got = table(runs, ["a", "b"])
    assert list(got["a"]) == ["coverage", "fidelity_explained_variance", "fidelity_l0", "fidelity_kl_divergence",
                              "fidelity_captions_unchanged"]  # metrics.json's, then the fidelity row's order
    ranked = apart(got, ["a", "b"])
    assert ranked["fidelity_kl_divergence"]["best"] == "a" and ranked["fidelity_kl_divergence"]["lower_is_better"]
    assert "fidelity_l0" not in ranked and not ranked["fidelity_explained_variance"]["lower_is_better"]
