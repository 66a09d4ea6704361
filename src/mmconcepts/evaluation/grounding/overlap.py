"""Word-set metrics of a concept dictionary: how much the concepts' words repeat each other, how many they carry.

No ground truth is needed: each metric reads only ``T_k``, the grounded words of each of the K concepts.

* :func:`overlap_matrix` / :func:`overlap`: how much the word sets of the concepts repeat each other (the
  CoX-LMM disentanglement score, lower is better); a concept without words counts as 0 (the best score);
* :func:`overlap_strict`: the same, but a concept without words overlaps fully (its row counts 1, the worst: it
  tells nothing apart from the other concepts), which closes the loophole of a dictionary whose concepts say
  nothing (the ShapesWorld precision has the same choice:
  :func:`~mmconcepts.evaluation.grounding.ground_truth.grounding_precision`'s ``strict``);
* :func:`words_per_concept` and :func:`empty_concepts`: how many words the concepts carry.

Words are compared lower-cased and stripped (:func:`~mmconcepts.data.truth.normalise`); a blank word is no word.

Examples
--------
>>> overlap([{"red", "circle"}, {"blue", "circle"}])
0.5
>>> overlap_strict([{"red"}, set()])
0.5
>>> words_per_concept([["red", "big"], []]), empty_concepts([["red", "big"], []])
(1.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable

from mmconcepts.data.truth import normalise
from mmconcepts.errors import MMConceptsError

__all__ = ["empty_concepts", "overlap", "overlap_matrix", "overlap_strict", "words_per_concept"]


def _word_sets(word_sets: Iterable[Iterable[str]]) -> list[set[str]]:
    """One set of normalised words per concept (a string is one word); at least one concept."""
    if isinstance(word_sets, (str, bytes)):
        raise MMConceptsError("word-set metrics need one collection of words per concept, got a single string")
    sets = [{normalise(w) for w in ([ws] if isinstance(ws, str) else ws)} - {""} for ws in word_sets]
    if not sets:
        raise MMConceptsError("word-set metrics need at least one concept's words, got none; ground the concepts "
                              "first")
    return sets


def overlap_matrix(word_sets: Iterable[Iterable[str]]) -> list[list[float]]:
    """Pairwise word overlap of the concepts: entry ``[k][l]`` is ``|T_l ∩ T_k| / |T_k|``.

    The diagonal is 1.0 (for display) except for a concept without words, whose whole row is 0.0.
    The matrix is not symmetric: row ``k`` is normalised by the size of ``T_k``.

    Parameters
    ----------
    word_sets : list of set of str
        ``T_k``, the grounded words of each of the K concepts.

    Returns
    -------
    list of list of float
        K x K nested lists (JSON ready).

    Examples
    --------
    >>> overlap_matrix([{"a", "b"}, {"b"}])
    [[1.0, 0.5], [1.0, 1.0]]
    """
    sets = _word_sets(word_sets)
    return [[0.0 if not tk else 1.0 if k == l else len(tl & tk) / len(tk) for l, tl in enumerate(sets)]
            for k, tk in enumerate(sets)]


def _row_overlaps(word_sets: Iterable[Iterable[str]], empty: float) -> list[float]:
    """Each concept's mean overlap with the others (``empty`` for a concept without words; 0.0 when K = 1)."""
    from collections import Counter

    sets = _word_sets(word_sets)
    K = len(sets)
    # sum_{l != k} |T_l & T_k| = sum_{w in T_k} (concepts holding w - 1): no K x K matrix (100k concepts)
    holders = Counter(w for t in sets for w in t)
    return [empty if not t else sum(holders[w] - 1 for w in t) / len(t) / (K - 1) if K > 1 else 0.0
            for t in sets]


def overlap(word_sets: Iterable[Iterable[str]]) -> float:
    """Mean word overlap between concepts (CoX-LMM disentanglement; lower is better).

    ``(1/K) sum_k (1/(K-1)) sum_{l != k} |T_l ∩ T_k| / |T_k|``; a concept without words contributes 0 and
    a single concept gives 0.0.

    Parameters
    ----------
    word_sets : list of set of str
        ``T_k``, the grounded words of each of the K concepts (lists are turned into sets).

    Returns
    -------
    float
        In [0, 1]: 0 when no two concepts share a word, 1 when all word sets are equal.

    Raises
    ------
    MMConceptsError
        When there are no concepts at all.

    Examples
    --------
    >>> overlap([{"a", "b"}, {"b", "c"}, {"d"}])
    0.16666666666666666
    """
    rows = _row_overlaps(word_sets, empty=0.0)
    return sum(rows) / len(rows)


def overlap_strict(word_sets: Iterable[Iterable[str]]) -> float:
    """Mean word overlap (lower is better) in which an empty concept overlaps fully.

    ``(1/K) sum_k o_k`` with ``o_k = 1`` for an empty ``T_k`` and :func:`overlap`'s term otherwise. A single
    concept gives 0.0, or 1.0 when it is empty.

    Parameters
    ----------
    word_sets : list of set of str
        The grounded words of each of the K concepts.

    Returns
    -------
    float
        In [0, 1]; equals :func:`overlap` when no concept is empty.

    Examples
    --------
    >>> overlap_strict([{"a", "b"}, {"b", "c"}, set()])
    0.5
    """
    rows = _row_overlaps(word_sets, empty=1.0)
    return sum(rows) / len(rows)


def words_per_concept(word_sets: Iterable[Iterable[str]]) -> float:
    """Mean number of distinct grounded words per concept.

    Examples
    --------
    >>> words_per_concept([["a", "b", "c"], ["d"], []])
    1.3333333333333333
    """
    sets = _word_sets(word_sets)
    return sum(len(s) for s in sets) / len(sets)


def empty_concepts(word_sets: Iterable[Iterable[str]]) -> float:
    """Share of the concepts with no grounded word, in [0, 1].

    Examples
    --------
    >>> empty_concepts([["a"], [], [], ["b"]])
    0.5
    """
    sets = _word_sets(word_sets)
    return sum(not s for s in sets) / len(sets)
