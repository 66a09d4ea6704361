"""The word-set metrics (overlap, strict overlap, words per concept, empty concepts), on hand-computed cases."""

from __future__ import annotations

import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.grounding.overlap import (empty_concepts, overlap, overlap_matrix, overlap_strict,
                                                     words_per_concept)


def test_overlap_hand_computed():
    sets = [{"a", "b"}, {"b", "c", "d"}, set()]
    # row 0: (|T1∩T0| + |T2∩T0|) / |T0| = 1/2, over K-1=2 -> 1/4; row 1: 1/3 / 2 = 1/6; empty row 2: 0
    assert overlap(sets) == pytest.approx((1 / 4 + 1 / 6 + 0) / 3)
    assert overlap_matrix(sets) == [[1.0, 0.5, 0.0], [1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_overlap_extremes_and_input_forms():
    assert overlap([{"a"}, {"b"}, {"c"}]) == 0.0
    assert overlap([{"a", "b"}] * 3) == 1.0
    assert overlap([{"a", "b"}]) == 0.0  # K = 1
    assert overlap([["a", "b", "b"], ("b",)]) == pytest.approx((1 / 2 + 1) / 2)  # lists/tuples become sets
    assert overlap([set(), set()]) == 0.0
    # a subset: T1 ⊂ T0 -> row 0 = 1/3, row 1 = 1
    assert overlap([{"a", "b", "c"}, {"a"}]) == pytest.approx((1 / 3 + 1) / 2)


def test_overlap_rejects_no_concepts():
    with pytest.raises(MMConceptsError, match="no"):
        overlap([])
    with pytest.raises(MMConceptsError):
        overlap_matrix("red")


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


def test_words_are_compared_lower_cased_and_stripped():
    assert overlap([{"Red", " circle"}, {"red"}]) == pytest.approx((1 / 2 + 1) / 2)
    assert overlap_matrix([{"A", ""}, {"a"}]) == [[1.0, 1.0], [1.0, 1.0]]  # a blank word is no word
    assert overlap_strict([{" "}, {"a"}]) == pytest.approx((1 + 0) / 2)  # only blanks: an empty concept
