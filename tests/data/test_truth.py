"""ShapesWorld's ground truth: the attribute vocabulary, the words true of an image, the token object, a
concept's target value and the caption accuracy, on hand-made cases."""

from __future__ import annotations

import pytest

from mmconcepts.data.shapesworld import vocabulary
from mmconcepts.data.truth import (attribute_vocabulary, caption_accuracy, concept_target, normalise, token_object,
                                   true_values, true_words)
from mmconcepts.errors import MMConceptsError


def obj(shape, colour, size, position):
    return {"shape": shape, "colour": colour, "size": size, "position": position, "x": 0.0, "y": 0.0}


def rec(*objects, background="white"):
    return {"background": background, "objects": list(objects)}


def test_attribute_vocabulary_covers_synonyms():
    vocab = attribute_vocabulary()
    assert vocab["big"] == ("size", "large") and vocab["large"] == ("size", "large")
    assert vocab["bottom"] == ("position", "bottom") and vocab["little"] == ("size", "small")
    assert vocab["red"] == ("colour", "red") and vocab["star"] == ("shape", "star")
    assert "the" not in vocab and "white" not in vocab  # grammar words and backgrounds name no object value
    assert set(vocab) <= set(vocabulary())


def test_true_words_every_object_with_synonyms():
    r = rec(obj("circle", "red", "small", "left"), obj("star", "blue", "large", "bottom"), background="grey")
    assert true_words(r) == {"circle", "red", "small", "little", "left",
                             "star", "blue", "large", "big", "bottom"}
    with pytest.raises(MMConceptsError, match="objects"):
        true_words({"caption": "x"})


def test_true_values_and_normalise():
    r = rec(obj("circle", "red", "small", "left"), {"shape": "star", "colour": None})
    assert true_values(r) == {("shape", "circle"), ("colour", "red"), ("size", "small"), ("position", "left"),
                              ("shape", "star")}  # a missing value is no value
    assert normalise("  Big ") == "big" and normalise(3) == "3"


def test_token_object_is_the_first_object_of_the_token_shape():
    objects = [obj("square", "red", "small", "left"), obj("circle", "blue", "large", "top"),
               obj("circle", "green", "small", "right")]
    assert token_object(objects, "circle")["colour"] == "blue"
    assert token_object(objects, "star") is None and token_object(None, "circle") is None


def test_concept_target_reads_the_first_word_as_an_attribute_value():
    assert concept_target(["red", "circle"]) == ("colour", "red")
    assert concept_target(["big"]) == ("size", "large")
    assert concept_target(["Left"]) == ("position", "left")
    assert concept_target(["circle", "red"]) is None  # a shape defines the token object
    assert concept_target(["picture"]) is None
    assert concept_target([]) is None


TRUTH = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"},
                     {"shape": "circle", "colour": "blue", "size": "large", "position": "right"}]}


def test_caption_accuracy_by_hand():
    result = caption_accuracy(
        ["a little red star on the left and one big blue circle on the right",  # all right
         "a small red square on the left and a large blue circle at the top",  # shape 1 and position 2 wrong
         "on the left a small red star"],  # second object missing
        [TRUTH, TRUTH, TRUTH])
    # 6 objects: shape right 4/6, colour 5/6, size 5/6, position 4/6; one exact caption of three
    assert result["shape"] == pytest.approx(4 / 6) and result["colour"] == pytest.approx(5 / 6)
    assert result["size"] == pytest.approx(5 / 6) and result["position"] == pytest.approx(4 / 6)
    assert result["exact"] == pytest.approx(1 / 3) and result["n_images"] == 3
    extra = caption_accuracy(["a little red star on the left and one big blue circle on the right and a red star"],
                             [TRUTH])
    assert extra["exact"] == 0.0 and extra["shape"] == 1.0  # an extra object is not exact


