"""Coverage by attribute kind, on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.extended.coverage import COVERAGE_KEYS, coverage_by_kind, kind_values
from mmconcepts.evaluation.grounding.ground_truth import coverage


def obj(shape, colour, size, position):
    return {"shape": shape, "colour": colour, "size": size, "position": position, "x": 0.0, "y": 0.0}


def rec(*objects, background="white"):
    return {"background": background, "objects": list(objects)}


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
