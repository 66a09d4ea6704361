"""How the reconstruction is spliced into the model (:class:`FidelitySettings`): where, on which test images.

What is measured and why: :mod:`mmconcepts.evaluation.fidelity.splice`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmconcepts.params import Interval, Options, param, validate

__all__ = ["DEFAULT_N_IMAGES", "POSITIONS", "FidelitySettings"]

#: Where the state is replaced: ``"token"``, the state from which the token of interest is predicted (the one
#: extraction records, the one the dictionary was learnt on). The splice itself takes any positions
#: (:func:`~mmconcepts.evaluation.fidelity.splice.at_positions`); every image token's, once concepts of image
#: tokens exist, is one more name here.
POSITIONS = ("token",)
#: Test images spliced by default (a seeded sample; ``None``: all).
DEFAULT_N_IMAGES = 200


@dataclass(frozen=True)
class FidelitySettings:
    """Where the reconstruction replaces the state and on which test images; validated once.

    Examples
    --------
    >>> FidelitySettings(n_images=50).positions
    'token'
    >>> FidelitySettings(positions="everywhere")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: unknown positions 'everywhere': choose token
    """

    positions: str = param("token", flag=None, constraint=Options(POSITIONS, noun="positions"),
                           help="which states the reconstruction replaces")
    n_images: int | None = param(DEFAULT_N_IMAGES, flag=None, constraint=Interval(int, 1), optional=True,
                                 help="test images (a seeded sample, one per image; None: all)")
    seed: int = param(0, flag=None, constraint=Interval(int, 0), help="the image sample")
    batch_size: int | None = param(None, flag=None, constraint=Interval(int, 1), optional=True,
                                   help="images per forward pass and generation batch (None: the batch size the "
                                        "concepts' feature store generated its captions with, else 32)")

    def __post_init__(self):
        validate(self)
