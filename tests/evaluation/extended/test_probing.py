"""k-sparse probing on planted codes: separable codes probe perfectly, noise at chance, keys follow the data."""

from __future__ import annotations

import numpy as np
import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.extended.probing import sparse_probing, token_labels, top_concepts

COLOURS = ("red", "green", "blue")
POSITIONS = ("left", "right", "top", "bottom")


def _meta(n, seed):
    """ShapesWorld-like rows: a circle of random colour / size / position, a square beside it in 1 of 3."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        circle = {"shape": "circle", "colour": COLOURS[i % 3], "size": ("small", "large")[int(rng.integers(2))],
                  "position": POSITIONS[int(rng.integers(4))]}
        objects = [circle] if i % 3 else [{"shape": "square", "colour": "red", "size": "large",
                                           "position": "top"}, circle]
        rows.append({"attributes": {"background": "white", "objects": objects}})
    return rows


def _planted_codes(meta, seed, noise=0.1):
    """One column per colour (active for that colour), one for 'large', one per position, then noise."""
    rng = np.random.default_rng(seed)
    codes = []
    for row in meta:
        circle = next(o for o in row["attributes"]["objects"] if o["shape"] == "circle")
        codes.append([float(circle["colour"] == c) for c in COLOURS] + [float(circle["size"] == "large")]
                     + [float(circle["position"] == p) for p in POSITIONS] + list(rng.random(4)))
    codes = np.array(codes)
    return codes + noise * rng.standard_normal(codes.shape)


@pytest.fixture(scope="module")
def data():
    train, test = _meta(120, 0), _meta(60, 1)
    return train, test, _planted_codes(train, 2), _planted_codes(test, 3)


def test_token_labels_follow_the_first_object_of_the_token_shape():
    row = {"attributes": {"objects": [{"shape": "square", "colour": "red"}, {"shape": "circle", "colour": "blue"},
                                      {"shape": "circle", "colour": "green"}]}}
    assert token_labels([row], "circle", "colour") == ["blue"]
    assert token_labels([row], "star", "colour") == [None]
    with pytest.raises(MMConceptsError, match="ShapesWorld"):
        token_labels([{"caption": "a dog"}], "circle", "colour")


def test_top_concepts_rank_by_the_class_mean_gap():
    codes = [[1.0, 0.2, 3.0], [0.9, 0.0, 3.0], [0.0, 0.1, 0.0], [0.1, 0.3, 0.0]]
    # gaps: column 0 |0.95 - 0.05| = 0.9, column 1 |0.1 - 0.2| = 0.1, column 2 |3 - 0| = 3
    assert top_concepts(codes, [True, True, False, False], 3) == [2, 0, 1]
    assert top_concepts(codes, [True, True, False, False], 10) == [2, 0, 1]  # at most K


def test_separable_codes_probe_perfectly_and_raw_features_are_the_ceiling(data):
    train, test, C_train, C_test = data
    out = sparse_probing(C_train, train, C_test, test, "circle", Z_train=C_train, Z_test=C_test)
    for attribute in ("colour", "size", "position"):
        assert out[f"probing_top1_{attribute}"] == 1.0  # each value has its own column, found on train
        assert out[f"probing_top3_{attribute}"] == 1.0
        assert out[f"probing_raw_{attribute}"] == 1.0
        assert 0.0 <= out[f"probing_random1_{attribute}"] <= 1.0
    assert set(out) == {f"probing_{p}_{a}" for a in ("colour", "size", "position")
                        for p in ("top1", "top3", "raw", "random1", "random3")}


def test_noise_codes_probe_at_chance(data):
    train, test, _, _ = data
    rng = np.random.default_rng(4)
    out = sparse_probing(rng.random((120, 6)), train, rng.random((60, 6)), test, "circle")
    assert set(out) == {f"probing_{p}_{a}" for a in ("colour", "size", "position") for p in ("top1", "top3")}
    for value in out.values():
        assert 0.3 < value < 0.7  # balanced accuracy: 0.5 is chance


def test_a_hidden_column_is_found_only_by_the_selection_on_train(data):
    """Colour lives in columns 5-7 only, behind 5 noise columns: top-1 must pick them from the train data."""
    train, test, C_train, C_test = data
    rng = np.random.default_rng(5)
    hide = lambda C: np.hstack([rng.random((len(C), 5)), C[:, :3]])  # noqa: E731
    out = sparse_probing(hide(C_train), train, hide(C_test), test, "circle")
    assert out["probing_top1_colour"] == 1.0
    assert out["probing_top1_size"] < 0.7 and out["probing_top1_position"] < 0.7  # no column for them


def test_attributes_without_a_task_are_absent_and_samples_without_the_token_are_left_out(data):
    train, test, C_train, C_test = data
    small = [{"attributes": {"objects": [{**o, "size": "small"} for o in r["attributes"]["objects"]]}}
             for r in train]
    out = sparse_probing(C_train, small, C_test, test, "circle")
    assert "probing_top1_size" not in out and out["probing_top1_colour"] == 1.0
    # a row without a circle carries no label: added anywhere, it changes nothing
    extra = {"attributes": {"objects": [{"shape": "star", "colour": "red", "size": "large", "position": "top"}]}}
    more = sparse_probing(np.vstack([C_train, np.zeros((1, C_train.shape[1]))]), train + [extra], C_test, test,
                          "circle")
    assert more == sparse_probing(C_train, train, C_test, test, "circle")


def test_mismatched_inputs_are_one_line_errors(data):
    train, test, C_train, C_test = data
    with pytest.raises(MMConceptsError, match="metadata rows"):
        sparse_probing(C_train[:5], train, C_test, test, "circle")
    with pytest.raises(MMConceptsError, match="same dictionary"):
        sparse_probing(C_train, train, C_test[:, :3], test, "circle")
    with pytest.raises(MMConceptsError, match="ks"):
        sparse_probing(C_train, train, C_test, test, "circle", ks=(0,))
