"""What ``evaluate --autointerp`` reads and how it names (:class:`AutointerpSettings`)."""

from __future__ import annotations

from dataclasses import dataclass

from mmconcepts.params import Interval, Text, param, validate

__all__ = ["AutointerpSettings"]


@dataclass(frozen=True)
class AutointerpSettings:
    """How each concept is named from its top images and how the name is scored; validated once.

    Parameters
    ----------
    namer : the image-text-to-text model that captions the images (a hub id or a folder); ``None``: the
        studied model itself (the concepts' feature store's model).
    n_top : top training images per concept a name is written from.
    n_random : random images the top images are contrasted with (and, on the test set, the negatives of
        the detection score); one seeded sample for every concept.
    n_detect : top test images per concept the detection score must pick out.
    n_words : words in a name at most.
    max_new_tokens : caption length.
    seed : the random images' sample.

    Examples
    --------
    >>> AutointerpSettings(n_top=8).n_top
    8
    >>> AutointerpSettings(n_words=0)
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: n_words must be an integer >= 1, got 0
    """

    namer: str | None = param(None, constraint=Text(), optional=True, shown="the studied model",
                              metavar="MODEL", help="image-text-to-text model that captions the top images "
                                                    "(hub id or folder)")
    n_top: int = param(10, constraint=Interval(int, 1), flag=None, help="top training images a name is written from")
    n_random: int = param(20, constraint=Interval(int, 1), flag=None, help="random images contrasted with them")
    n_detect: int = param(5, constraint=Interval(int, 1), flag=None,
                          help="top test images the detection score must pick out")
    n_words: int = param(3, constraint=Interval(int, 1), flag=None, help="words in a name at most")
    max_new_tokens: int = param(50, constraint=Interval(int, 1), flag=None, help="caption length")
    seed: int = param(0, constraint=Interval(int, 0), flag=None, help="the random images' sample")

    def __post_init__(self):
        validate(self)
