"""Words per concept, empty concepts, strict precision / overlap and coverage by kind, on hand-made cases."""

from __future__ import annotations

import random

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.extended.coverage import COVERAGE_KEYS, coverage_by_kind, kind_values
from mmconcepts.evaluation.grounding.ground_truth import coverage, grounding_precision, overlap
from mmconcepts.evaluation.grounding.overlap import (empty_concepts, grounding_precision_strict, overlap_strict,
                                                words_per_concept)


def obj(shape, colour, size, position):
    return {"shape": shape, "colour": colour, "size": size, "position": position, "x": 0.0, "y": 0.0}


def rec(*objects):
    return {"background": "white", "objects": list(objects)}


def test_words_per_concept_and_empty_concepts_by_hand():
    words = [["red", "big"], [], ["left", "Left ", "top"], [""]]  # case and blanks: "left" once, "" is no word
    assert words_per_concept(words) == pytest.approx((2 + 0 + 2 + 0) / 4)
    assert empty_concepts(words) == 0.5
    with pytest.raises(MMConceptsError):
        words_per_concept([])
    with pytest.raises(MMConceptsError):
        empty_concepts("red")


def test_overlap_strict_counts_an_empty_concept_as_full_overlap():
    # rows: {a,b}: (1/2 + 0)/2 = 1/4; {b,c,d}: (1/3 + 0)/2 = 1/6; empty: 1
    assert overlap_strict([{"a", "b"}, {"b", "c", "d"}, set()]) == pytest.approx((1 / 4 + 1 / 6 + 1) / 3)
    assert overlap([{"a", "b"}, {"b", "c", "d"}, set()]) == pytest.approx((1 / 4 + 1 / 6 + 0) / 3)  # the loophole
    assert overlap_strict([set(), set()]) == 1.0 and overlap([set(), set()]) == 0.0
    assert overlap_strict([set()]) == 1.0 and overlap_strict([{"a"}]) == 0.0


def test_grounding_precision_strict_counts_an_empty_concept_as_a_wrong_word():
    record = rec(obj("circle", "red", "small", "left"))
    words = [["red", "blue"], [], ["small"]]
    # image 0, top-1 concept 0: 1 right of 2; image 1, top-1 the empty concept: 0 (the loose one skips it)
    assert grounding_precision_strict(words, [record, record], [[0], [1]]) == pytest.approx(0.25)
    assert grounding_precision(words, [record, record], [[0], [1]]) == pytest.approx(0.5)
    # top-3 of one image: words red, blue, small + one empty concept -> 2 right of 4
    assert grounding_precision_strict(words, [record], [[0, 1, 2]]) == pytest.approx(0.5)
    with pytest.raises(MMConceptsError, match="out of range"):
        grounding_precision_strict(words, [record], [[3]])
    with pytest.raises(MMConceptsError, match="one row"):
        grounding_precision_strict(words, [record], [[0], [1]])


def test_strict_metrics_equal_the_loose_ones_without_empty_concepts():
    rng = random.Random(0)
    pool = ["red", "blue", "green", "big", "small", "left", "top", "picture", "circle", "square"]
    shapes, colours = ["circle", "square", "star"], ["red", "blue", "green"]
    for _ in range(20):
        words = [rng.sample(pool, rng.randint(1, 4)) for _ in range(6)]
        records = [rec(obj(rng.choice(shapes), rng.choice(colours), "small", "left")) for _ in range(8)]
        tops = [rng.sample(range(6), 3) for _ in records]
        assert overlap_strict(words) == pytest.approx(overlap([set(w) for w in words]))
        assert grounding_precision_strict(words, records, tops) == pytest.approx(
            grounding_precision(words, records, tops))


def test_kind_values_split_the_token_object_from_the_others():
    image = rec(obj("square", "red", "large", "top"), obj("circle", "red", "small", "left"),
                obj("circle", "blue", "small", "right"))
    assert kind_values(image, "circle") == {
        ("token", "colour", "red"), ("token", "size", "small"), ("token", "position", "left"),
        ("other", "shape", "square"), ("other", "colour", "red"), ("other", "size", "large"),
        ("other", "position", "top"), ("other", "shape", "circle"), ("other", "colour", "blue"),
        ("other", "size", "small"), ("other", "position", "right")}
    with pytest.raises(MMConceptsError, match="objects"):
        kind_values({"caption": "x"}, "circle")


def test_coverage_by_kind_by_hand():
    images = [rec(obj("circle", "red", "small", "left"), obj("square", "blue", "large", "top")),
              rec(obj("circle", "red", "large", "left")),
              rec(obj("circle", "blue", "small", "right"), obj("square", "blue", "small", "top")),
              rec(obj("circle", "blue", "large", "right"))]
    # concept 0 tops images 0, 1 (both red, left circles); concept 1 tops 2, 3 (blue, right circles)
    A = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    out = coverage_by_kind(A, images, "circle", n_top=2)
    # token: colour red, blue (both owned); size small, large (neither: each concept's two differ); position
    # left, right (both owned) -> 4 of 6. others: only square, blue, top appear in 2 images: never owned.
    assert out["coverage_token_colour"] == 1.0 and out["coverage_token_size"] == 0.0
    assert out["coverage_token_position"] == 1.0 and out["coverage_token"] == pytest.approx(4 / 6)
    assert out["coverage_other_shape"] == 0.0 and out["coverage_other"] == 0.0
    assert "coverage_other_size" not in out  # large and small appear once each: no value considered
    assert list(out) == [k for k in COVERAGE_KEYS if k in out]
    # pooled over kinds it is metrics.coverage: blue is owned as the token's colour there
    pooled = coverage(A, images, n_top=2, exclude=["circle"])
    assert pooled["owned"]["colour=blue"] == [1]


def test_coverage_by_kind_refuses_mismatched_input():
    with pytest.raises(MMConceptsError, match="attribute records"):
        coverage_by_kind(torch.ones(3, 2), [rec()], "circle")
    with pytest.raises(MMConceptsError, match="n_top"):
        coverage_by_kind(torch.ones(1, 2), [rec()], "circle", n_top=0)
