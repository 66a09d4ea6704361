"""How good a concept's name is, as pure functions of captions and ShapesWorld records, and the typed results.

Two scores, for either naming route (the words a model wrote from the top images, and the words read through
the unembedding, ``grounding.json``):

- **detection** (the field's proxy, as SAEBench's and Neuronpedia's auto-interpretation score a name): can
  the name pick the concept's top *test* images out of random test images? An image is picked when the
  namer's caption of it holds the name's first word (both routes are read on one word, so that neither
  gains by length); the score is the balanced accuracy (the mean of the share
  of top images picked and the share of random images left), 0.5 for a name that tells nothing.
- **truth** (ShapesWorld only, what no peer can check): is the name's first word true of the token object
  (the object the word of interest names) in each of the concept's top training images? The share over every
  (concept, top image) pair. A first word that names no attribute value is never true.

Examples
--------
>>> detection(["red"], ["a red circle", "a red star"], ["a blue circle", "a red square"])
0.75
>>> record = {"objects": [{"shape": "circle", "colour": "red", "size": "large", "position": "top"}]}
>>> name_truth(["big", "red"], [record], "circle"), name_truth(["blue"], [record], "circle")
(1.0, 0.0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mmconcepts.data.truth import attribute_vocabulary, normalise, token_object
from mmconcepts.evaluation.rows import Row, mean

__all__ = ["AutointerpResult", "AutointerpRow", "ConceptName", "caption_words", "detection", "name_truth"]

_WORD = re.compile(r"[a-z]+")


def caption_words(caption: str) -> set[str]:
    """The lower-cased alphabetic words of a caption.

    Examples
    --------
    >>> sorted(caption_words("A big, red circle."))
    ['a', 'big', 'circle', 'red']
    """
    return set(_WORD.findall(str(caption).lower()))


def _picked(words: Sequence[str], caption: str) -> bool:
    return bool({normalise(w) for w in words} & caption_words(caption))


def detection(words: Sequence[str], top_captions: Sequence[str], random_captions: Sequence[str]) -> float | None:
    """Balanced accuracy of "the caption holds a word of the name" at telling top images from random ones.

    Parameters
    ----------
    words : the name (any number of words; none picks nothing).
    top_captions, random_captions : the namer's captions of the concept's top test images and of random ones.

    Returns
    -------
    float in [0, 1], or None when either side is empty.
    """
    if not top_captions or not random_captions:
        return None
    hits = mean(float(_picked(words, c)) for c in top_captions)
    rejects = mean(float(not _picked(words, c)) for c in random_captions)
    return (hits + rejects) / 2


def name_truth(words: Sequence[str], records: Sequence[dict], token: str) -> float | None:
    """The share of ``records`` (the top images' ShapesWorld records) whose token object has the value the
    name's first word names (0 for every image when the first word names no attribute value).

    Returns
    -------
    float in [0, 1], or None when no record has a token object.
    """
    target = attribute_vocabulary().get(normalise(words[0])) if words else None
    objects = [token_object(r.get("objects"), token) for r in records if isinstance(r, dict)]
    objects = [o for o in objects if o is not None]
    if not objects:
        return None
    if target is None:
        return 0.0
    attribute, value = target
    return mean(float(o.get(attribute) == value) for o in objects)


@dataclass(frozen=True)
class ConceptName:
    """One concept's two names and their scores (``None``: does not apply).

    Parameters
    ----------
    index : the concept.
    name : the words the namer's captions of the top images hold more often than those of random images, most
        telling first (empty: no word sets them apart, or the concept is never active).
    words : the concept's first words read through the unembedding (``grounding.json``).
    name_detection, word_detection : :func:`detection` of either.
    name_truth, word_truth : :func:`name_truth` of either (ShapesWorld).
    top_captions : the namer's captions of the top training images the name was written from.
    """

    index: int
    name: list[str]
    words: list[str]
    name_detection: float | None = None
    word_detection: float | None = None
    name_truth: float | None = None
    word_truth: float | None = None
    top_captions: list[str] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class AutointerpRow(Row):
    """A method's naming scores for its row of ``metrics.json``: each score's mean over the named concepts.

    Examples
    --------
    >>> AutointerpRow(name_truth=0.9, word_truth=0.8).to_json()
    {'name_truth': 0.9, 'word_truth': 0.8}
    """

    name_detection: float | None = None
    word_detection: float | None = None
    name_truth: float | None = None
    word_truth: float | None = None
    named_concepts: float | None = None

    @classmethod
    def of(cls, names: Sequence[ConceptName]) -> AutointerpRow:
        """The row of a method's concept names: the means over the concepts that have a name (the share of
        them as ``named_concepts``)."""
        named = [n for n in names if n.name]
        return cls(name_detection=mean(n.name_detection for n in named),
                   word_detection=mean(n.word_detection for n in names),
                   name_truth=mean(n.name_truth for n in named), word_truth=mean(n.word_truth for n in names),
                   named_concepts=len(named) / len(names) if names else None)


@dataclass(frozen=True)
class AutointerpResult:
    """The naming evaluation of every compared method: ``autointerp.json``.

    Parameters
    ----------
    namer : the model that wrote the names.
    ground_truth : whether the truth scores were read (ShapesWorld).
    methods : ``{method: [ConceptName, ...]}``.
    settings : the :class:`~.settings.AutointerpSettings` as JSON.
    """

    namer: str
    ground_truth: bool
    methods: dict[str, list[ConceptName]]
    settings: dict

    def rows(self) -> dict[str, AutointerpRow]:
        """Each method's :class:`AutointerpRow`."""
        return {m: AutointerpRow.of(names) for m, names in self.methods.items()}

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {"namer": self.namer, "ground_truth": self.ground_truth, "settings": self.settings,
                "methods": {m: {"row": AutointerpRow.of(names).to_json(), "concepts": [asdict(n) for n in names]}
                            for m, names in self.methods.items()}}
