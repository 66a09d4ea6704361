"""ShapesWorld's ground truth, as every stage reads it: which words are true of an image, which object is the
token's, what a concept's first word names, and how much of an image a caption gets right.

A ShapesWorld image carries its attribute record ``{"background": ..., "objects": [{"shape", "colour", "size",
"position", "x", "y", ...}, ...]}`` (:mod:`mmconcepts.data.shapesworld`). Only the object attributes of
:data:`~mmconcepts.data.shapesworld.ATTRIBUTES` (shape, colour, size, position) count: the captions do not
describe the background. Words are compared lower-cased and stripped (:func:`normalise`).

The evaluation (grounding precision, the causal scores, the concept maps, coverage by kind, probing), toy
training and the demo read the truth here; nothing in this module needs torch.

Examples
--------
>>> record = {"objects": [{"shape": "star", "colour": "red", "size": "large", "position": "top"}]}
>>> sorted(true_words(record))
['big', 'large', 'red', 'star', 'top']
>>> concept_target(["Big", "circle"]), token_object(record["objects"], "star")["colour"]
(('size', 'large'), 'red')
"""

from __future__ import annotations

from itertools import permutations

from mmconcepts.data.shapesworld import ATTRIBUTES, COLOURS, POSITIONS, SHAPES, SIZES, attribute_words, parse_caption
from mmconcepts.errors import MMConceptsError

__all__ = ["attribute_vocabulary", "caption_accuracy", "concept_target", "normalise", "token_object",
           "true_values", "true_words"]

_VALUES = {"shape": tuple(SHAPES), "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS)}


def normalise(word) -> str:
    """A word as the ground truth compares it: a string, stripped and lower-cased.

    Examples
    --------
    >>> normalise(" Red ")
    'red'
    """
    return str(word).strip().lower()


def attribute_vocabulary() -> dict[str, tuple[str, str]]:
    """Every word that names a ShapesWorld object attribute value, synonyms included.

    Returns
    -------
    dict
        ``word -> (attribute, value)``, e.g. ``"big" -> ("size", "large")``, ``"little" -> ("size",
        "small")``.

    Examples
    --------
    >>> attribute_vocabulary()["big"]
    ('size', 'large')
    """
    vocab: dict[str, tuple[str, str]] = {}
    for attribute in ATTRIBUTES:
        for value in _VALUES[attribute]:
            for word in attribute_words(value):
                vocab[word] = (attribute, value)
    return vocab


def _objects(record: dict) -> list[dict]:
    if not isinstance(record, dict) or not isinstance(record.get("objects"), list):
        raise MMConceptsError("a ShapesWorld attribute record needs an 'objects' list; use features extracted "
                              "from a ShapesWorld dataset (its metadata rows carry 'attributes')")
    return record["objects"]


def true_values(record: dict) -> set[tuple[str, str]]:
    """The ``(attribute, value)`` pairs that some object of the image has.

    Examples
    --------
    >>> sorted(true_values({"objects": [{"shape": "star", "colour": "red"}]}))
    [('colour', 'red'), ('shape', 'star')]
    """
    return {(a, obj[a]) for obj in _objects(record) for a in ATTRIBUTES if obj.get(a) is not None}


def true_words(attributes: dict) -> set[str]:
    """All words that are true of an image: each object's shape, colour, size and position, with synonyms.

    Parameters
    ----------
    attributes : dict
        The image's ground-truth record ``{"background": ..., "objects": [{"shape", "colour", "size",
        "position", ...}, ...]}``.

    Returns
    -------
    set of str

    Examples
    --------
    >>> sorted(true_words({"objects": [{"shape": "circle", "colour": "red", "size": "small",
    ...                                 "position": "bottom"}]}))
    ['bottom', 'circle', 'little', 'red', 'small']
    """
    return {word for _, value in true_values(attributes) for word in attribute_words(value)}


def token_object(objects, token: str) -> dict | None:
    """The first object (a parsed caption's or a ground-truth record's) whose shape is ``token``.

    Examples
    --------
    >>> token_object([{"shape": "star"}, {"shape": "circle", "colour": "red"}], "circle")
    {'shape': 'circle', 'colour': 'red'}
    >>> token_object(None, "circle") is None
    True
    """
    for obj in objects or []:
        if obj.get("shape") == token:
            return obj
    return None


def concept_target(words) -> tuple[str, str] | None:
    """``(attribute, value)`` named by a concept's first word, or ``None`` (no word, a shape, no attribute).

    Examples
    --------
    >>> concept_target(["left", "red"]), concept_target(["circle"]), concept_target([])
    (('position', 'left'), None, None)
    """
    if not words:
        return None
    target = attribute_vocabulary().get(normalise(words[0]))
    if target is None or target[0] == "shape":
        return None
    return target


def _truth(attributes: dict) -> list[dict]:
    return [{a: obj[a] for a in ATTRIBUTES} for obj in attributes["objects"]]


def _best_pairing(truth: list[dict], predicted: list[dict]) -> list[dict]:
    """For each true object, its caption object (``{}`` if none) in the pairing with the most right attributes."""
    padded = predicted + [{}] * max(0, len(truth) - len(predicted))
    best, best_right = None, -1
    for order in permutations(range(len(padded)), len(truth)):
        n_right = sum(padded[j].get(a) == obj[a] for obj, j in zip(truth, order) for a in ATTRIBUTES)
        if n_right > best_right:
            best, best_right = [padded[j] for j in order], n_right
    return best


def caption_accuracy(captions: list[str], attributes: list[dict]) -> dict:
    """Per-attribute accuracy of generated captions against ShapesWorld ground truth.

    The objects of a caption are read back with :func:`~mmconcepts.data.shapesworld.parse_caption` and matched
    one to one with the true objects, in the pairing that gets the most attributes right (captions name the
    objects in any order). An attribute of a true object counts as right when its caption object names the
    same value; a missing object counts as wrong for every attribute. ``exact`` is the share of captions whose
    objects are all right, none missing and none extra.

    Returns
    -------
    dict
        ``{"shape", "colour", "size", "position": share right, "exact": share exact, "n_images"}``.

    Examples
    --------
    >>> truth = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
    >>> caption_accuracy(["a little red star on the left"], [truth])["exact"]
    1.0
    """
    if len(captions) != len(attributes):
        raise ValueError(f"{len(captions)} captions for {len(attributes)} attribute records")
    right = {a: 0 for a in ATTRIBUTES}
    n_objects = 0
    exact = 0
    for text, record in zip(captions, attributes):
        truth = _truth(record)
        predicted = parse_caption(text)
        n_objects += len(truth)
        pairing = _best_pairing(truth, predicted)
        for obj, guess in zip(truth, pairing):
            for a in ATTRIBUTES:
                right[a] += guess.get(a) == obj[a]
        exact += len(predicted) == len(truth) and all(g == o for o, g in zip(truth, pairing))
    n = max(len(captions), 1)
    result = {a: right[a] / max(n_objects, 1) for a in ATTRIBUTES}
    result["exact"] = exact / n
    result["n_images"] = len(captions)
    return result
