"""The ShapesWorld ground-truth metrics (grounding precision, plain and strict; coverage; purity), on
hand-computed cases."""

from __future__ import annotations

import math
import random

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.grounding.ground_truth import coverage, grounding_precision, purity
from mmconcepts.evaluation.grounding.overlap import overlap, overlap_strict


def obj(shape, colour, size, position):
    return {"shape": shape, "colour": colour, "size": size, "position": position, "x": 0.0, "y": 0.0}


def rec(*objects, background="white"):
    return {"background": background, "objects": list(objects)}


# ------------------------------------------------------------------------------------ grounding precision

A = rec(obj("circle", "red", "small", "left"))
B = rec(obj("square", "blue", "large", "bottom"), obj("star", "red", "small", "top"))
WORDS = [["red", "circle", "picture"], ["big", "square"], [], ["Bottom"]]


def test_grounding_precision_top1_skips_images_without_words():
    # A: red, circle true, picture not -> 2/3; B: big, square -> 1; third image: concept without words, skipped
    assert grounding_precision(WORDS, [A, B, A], [[0], [1], [2]]) == pytest.approx((2 / 3 + 1) / 2)


def test_grounding_precision_top3_uses_distinct_words():
    # A: red circle picture big square bottom -> 2/6; B: same words, red bottom big square true -> 4/6
    assert grounding_precision(WORDS, [A, B], [[0, 1, 3], [0, 3, 1]]) == pytest.approx((2 / 6 + 4 / 6) / 2)
    # "red" in two concepts counts once
    assert grounding_precision([["red"], ["red", "green"]], [B], [[0, 1]]) == pytest.approx(1 / 2)


def test_grounding_precision_background_and_nan():
    assert grounding_precision([["white", "red"]], [A], [[0]]) == 0.5  # background colour is not a true word
    assert math.isnan(grounding_precision([[], []], [A, B], [[0], [1]]))


def test_grounding_precision_errors():
    with pytest.raises(MMConceptsError, match="one row"):
        grounding_precision(WORDS, [A, B], [[0]])
    with pytest.raises(MMConceptsError, match="out of range"):
        grounding_precision(WORDS, [A], [[7]])
    with pytest.raises(MMConceptsError, match="no test images"):
        grounding_precision(WORDS, [], [])


def test_grounding_precision_strict_counts_an_empty_concept_as_a_wrong_word():
    record = rec(obj("circle", "red", "small", "left"))
    words = [["red", "blue"], [], ["small"]]
    # image 0, top-1 concept 0: 1 right of 2; image 1, top-1 the empty concept: 0 (the loose one skips it)
    assert grounding_precision(words, [record, record], [[0], [1]], strict=True) == pytest.approx(0.25)
    assert grounding_precision(words, [record, record], [[0], [1]]) == pytest.approx(0.5)
    # top-3 of one image: words red, blue, small + one empty concept -> 2 right of 4
    assert grounding_precision(words, [record], [[0, 1, 2]], strict=True) == pytest.approx(0.5)
    with pytest.raises(MMConceptsError, match="out of range"):
        grounding_precision(words, [record], [[3]], strict=True)
    with pytest.raises(MMConceptsError, match="one row"):
        grounding_precision(words, [record], [[0], [1]], strict=True)


def test_strict_metrics_equal_the_loose_ones_without_empty_concepts():
    rng = random.Random(0)
    pool = ["red", "blue", "green", "big", "small", "left", "top", "picture", "circle", "square"]
    shapes, colours = ["circle", "square", "star"], ["red", "blue", "green"]
    for _ in range(20):
        words = [rng.sample(pool, rng.randint(1, 4)) for _ in range(6)]
        records = [rec(obj(rng.choice(shapes), rng.choice(colours), "small", "left")) for _ in range(8)]
        tops = [rng.sample(range(6), 3) for _ in records]
        assert overlap_strict(words) == pytest.approx(overlap([set(w) for w in words]))
        assert grounding_precision(words, records, tops, strict=True) == pytest.approx(
            grounding_precision(words, records, tops))


# ------------------------------------------------------------------------------------ coverage and purity

TRAIN = [
    rec(obj("circle", "red", "small", "left")),                                         # 0
    rec(obj("square", "red", "large", "right"), obj("star", "blue", "small", "top")),   # 1
    rec(obj("circle", "blue", "small", "left")),                                        # 2
    rec(obj("triangle", "green", "large", "bottom")),                                   # 3
]
# concept 0's top-2 images: 0, 1; concept 1's: 3, 2
ACTS = torch.tensor([[0.9, 0.0], [0.8, 0.1], [0.1, 0.7], [0.0, 0.9]])


def test_coverage_hand_computed():
    # values in >= 2 images: shape=circle, colour=red, colour=blue, size=small, size=large, position=left (6)
    # images 0 and 1 share red and small; images 2 and 3 share nothing
    result = coverage(ACTS, TRAIN, n_top=2)
    assert result["n_values"] == 6 and result["n_top"] == 2
    assert result["owned"] == {"colour=blue": [], "colour=red": [0], "position=left": [], "shape=circle": [],
                               "size=large": [], "size=small": [0]}
    assert result["coverage"] == pytest.approx(2 / 6)


def test_coverage_exclude_and_larger_n_top():
    for exclude in (["small"], ["size=small"], [("size", "small")], ["little", "dog"]):
        result = coverage(ACTS, TRAIN, n_top=2, exclude=exclude)
        assert result["n_values"] == 5 and result["coverage"] == pytest.approx(1 / 5)
    # n_top=3: only size=small is in >= 3 images; concept 0's top-3 (0, 1, 2) all have a small object
    assert coverage(ACTS, TRAIN, n_top=3) == {"coverage": 1.0, "owned": {"size=small": [0]}, "n_values": 1,
                                              "n_top": 3}
    # n_top above N uses all N images; no value is in all 4 images
    assert math.isnan(coverage(ACTS, TRAIN, n_top=10)["coverage"])


def test_purity_hand_computed():
    # concept 0: red (and small) in both top-2 images -> 1; concept 1: every value in one image -> 1/2
    assert purity(ACTS, TRAIN, n_top=2) == pytest.approx(0.75)
    assert purity(ACTS, TRAIN, n_top=2, exclude=["red", "small"]) == pytest.approx(0.5)
    # n_top=3: concept 0 (0, 1, 2): small in 3 -> 1; concept 1 (3, 2, 1): blue / small / large in 2 -> 2/3
    assert purity(ACTS, TRAIN, n_top=3) == pytest.approx((1 + 2 / 3) / 2)


def test_coverage_and_purity_errors():
    with pytest.raises(MMConceptsError, match="attribute records"):
        coverage(ACTS, TRAIN[:3])
    with pytest.raises(MMConceptsError, match="N x K"):
        purity(torch.zeros(4), TRAIN)
    with pytest.raises(MMConceptsError, match="empty"):
        purity(torch.zeros(0, 3), [])
    with pytest.raises(MMConceptsError, match="n_top"):
        coverage(ACTS, TRAIN, n_top=0)


def test_coverage_and_purity_read_the_sparse_form_as_the_dense_one():
    import torch

    from mmconcepts.evaluation.grounding.ground_truth import coverage, purity

    g = torch.Generator().manual_seed(0)
    colours, shapes = ("red", "blue", "green"), ("star", "circle")
    records = [{"objects": [{"shape": shapes[i % 2], "colour": colours[i % 3], "size": "small",
                             "position": "left"}]} for i in range(30)]
    A = torch.rand(30, 6, generator=g) * (torch.rand(30, 6, generator=g) > 0.5)  # every concept active on >= 5
    assert bool(((A > 0).sum(0) >= 5).all())
    S = A.to_sparse_csr()
    assert coverage(S, records)["coverage"] == coverage(A, records)["coverage"]
    assert coverage(S, records)["owned"] == coverage(A, records)["owned"]
    assert purity(S, records) == purity(A, records)
    # a concept active on fewer images than n_top owns nothing and its purity counts what it has
    A[:, 0] = 0
    A[0, 0] = 1.0
    cov = coverage(A.to_sparse_csr(), records)
    assert all(0 not in ks for ks in cov["owned"].values())
    assert 0.0 <= purity(A.to_sparse_csr(), records) <= 1.0
