"""Word metrics that count a concept with no grounded word against the dictionary.

:func:`~mmconcepts.evaluation.grounding.ground_truth.grounding_precision` skips a test image whose concepts have no word,
and :func:`~mmconcepts.evaluation.grounding.ground_truth.overlap` counts a concept without words as 0 (the best score): a
dictionary whose concepts say nothing scores well on both. The *strict* variants here close that loophole:

* :func:`grounding_precision_strict`: every empty concept among an image's top concepts counts as one wrong
  word, so an image explained by an empty concept alone has precision 0 (instead of being skipped);
* :func:`overlap_strict`: an empty concept overlaps fully, its row of the overlap matrix counts 1 (the
  worst: it tells nothing apart from the other concepts); the other rows are those of
  :func:`~mmconcepts.evaluation.grounding.ground_truth.overlap_matrix`;
* :func:`words_per_concept` and :func:`empty_concepts` say how many words the concepts carry.

Words are compared lower-cased and stripped, as in :mod:`mmconcepts.evaluation.grounding.ground_truth`.

Examples
--------
>>> overlap_strict([{"red"}, set()])
0.5
>>> words_per_concept([["red", "big"], []]), empty_concepts([["red", "big"], []])
(1.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mmconcepts.errors import MMConceptsError

__all__ = ["empty_concepts", "grounding_precision_strict", "overlap_strict", "words_per_concept"]


def _sets(word_sets: Iterable[Iterable[str]]) -> list[set[str]]:
    if isinstance(word_sets, (str, bytes)):
        raise MMConceptsError("word metrics need one collection of words per concept, got a single string")
    sets = [{str(w).strip().lower() for w in ([ws] if isinstance(ws, str) else ws)} - {""} for ws in word_sets]
    if not sets:
        raise MMConceptsError("word metrics need at least one concept's words, got none; ground the concepts first")
    return sets


def words_per_concept(word_sets: Iterable[Iterable[str]]) -> float:
    """Mean number of distinct grounded words per concept.

    Parameters
    ----------
    word_sets : list of list of str
        The grounded words of each concept.

    Returns
    -------
    float

    Examples
    --------
    >>> words_per_concept([["a", "b", "c"], ["d"], []])
    1.3333333333333333
    """
    sets = _sets(word_sets)
    return sum(len(s) for s in sets) / len(sets)


def empty_concepts(word_sets: Iterable[Iterable[str]]) -> float:
    """Share of the concepts with no grounded word.

    Parameters
    ----------
    word_sets : list of list of str
        The grounded words of each concept.

    Returns
    -------
    float
        In [0, 1].

    Examples
    --------
    >>> empty_concepts([["a"], [], [], ["b"]])
    0.5
    """
    sets = _sets(word_sets)
    return sum(not s for s in sets) / len(sets)


def overlap_strict(word_sets: Iterable[Iterable[str]]) -> float:
    """Mean word overlap (lower is better) in which an empty concept overlaps fully.

    ``(1/K) sum_k o_k`` with ``o_k = 1`` for an empty ``T_k`` and ``o_k = (1/(K-1)) sum_{l != k} |T_l ∩ T_k|
    / |T_k|`` otherwise (:func:`~mmconcepts.evaluation.grounding.ground_truth.overlap`'s term). A single concept gives 0.0,
    or 1.0 when it is empty.

    Parameters
    ----------
    word_sets : list of set of str
        The grounded words of each of the K concepts.

    Returns
    -------
    float
        In [0, 1]; equals :func:`~mmconcepts.evaluation.grounding.ground_truth.overlap` when no concept is empty.

    Examples
    --------
    >>> overlap_strict([{"a", "b"}, {"b", "c"}, set()])
    0.5
    """
    sets = _sets(word_sets)
    K = len(sets)
    total = 0.0
    for k, tk in enumerate(sets):
        if not tk:
            total += 1.0
        elif K > 1:
            total += sum(len(tl & tk) / len(tk) for l, tl in enumerate(sets) if l != k) / (K - 1)
    return total / K


def grounding_precision_strict(concept_words: Sequence[Sequence[str]], test_attributes: Sequence[dict],
                               top_concepts: Sequence[Sequence[int]]) -> float:
    """Grounding precision in which every empty concept among an image's top concepts is one wrong word.

    For image ``i``: the distinct words of its concepts ``top_concepts[i]`` that are true of it (ShapesWorld
    ground truth, :func:`~mmconcepts.evaluation.grounding.ground_truth.true_words`), divided by the number of those words
    plus the number of those concepts that have no word; averaged over every image (none is skipped).

    Parameters
    ----------
    concept_words : list of list of str
        The grounded words of each of the K concepts.
    test_attributes : list of dict
        The ground-truth record of each test image.
    top_concepts : list of list of int
        For each test image, the indices of its most activated concepts.

    Returns
    -------
    float
        In [0, 1]; equals :func:`~mmconcepts.evaluation.grounding.ground_truth.grounding_precision` when no concept is empty.

    Raises
    ------
    MMConceptsError
        When the rows disagree, there are no test images, or an index is out of range.

    Examples
    --------
    >>> record = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
    >>> grounding_precision_strict([["red", "blue"], []], [record, record], [[0], [1]])
    0.25
    """
    from mmconcepts.evaluation.grounding.ground_truth import true_words

    if len(test_attributes) != len(top_concepts):
        raise MMConceptsError(f"{len(test_attributes)} attribute records but {len(top_concepts)} rows of top "
                              "concepts; pass one row of concept indices per test image")
    if not test_attributes:
        raise MMConceptsError("no test images to compute grounding precision on; pass a non-empty test set")
    K = len(concept_words)
    total = 0.0
    for record, row in zip(test_attributes, top_concepts):
        words: list[str] = []
        empty = 0
        for k in dict.fromkeys(int(k) for k in row):
            if not -K <= k < K:
                raise MMConceptsError(f"concept index {k} is out of range for {K} concepts; pass indices of "
                                      "the grounded concepts")
            own = [w for w in (str(w).strip().lower() for w in concept_words[k]) if w]
            empty += not own
            words.extend(own)
        words = list(dict.fromkeys(words))
        truth = true_words(record)
        denominator = len(words) + empty
        total += sum(w in truth for w in words) / denominator if denominator else 0.0
    return total / len(test_attributes)
