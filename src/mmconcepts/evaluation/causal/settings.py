"""How the causal evaluation intervenes (:class:`CausalSettings`), with its calibrated defaults.

The defaults and why they are what they are: :mod:`mmconcepts.evaluation.causal.interventions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmconcepts.interventions.directions import DEFAULT_POSITIONS as _POSITIONS
from mmconcepts.interventions.directions import DIRECTIONS
from mmconcepts.interventions.directions import STRENGTH_FACTOR as _STRENGTH
from mmconcepts.interventions.steering import POSITIONS
from mmconcepts.params import Boolean, Interval, Many, Options, Text, param, validate

__all__ = ["ABLATE_WHERE", "DEFAULT_IMAGE_STRENGTH_FACTOR", "DEFAULT_LAYER", "DEFAULT_N_IMAGES", "DEFAULT_POSITIONS",
           "DEFAULT_STRENGTH_FACTOR", "DIRECTIONS", "CausalSettings"]

#: Layer the interventions act at; ``None``: the dictionary's own layer.
DEFAULT_LAYER = None
#: Positions of the intervention and strength (in multiples of the concept's typical contribution): the
#: calibrated defaults of :mod:`mmconcepts.interventions.directions`.
DEFAULT_POSITIONS = _POSITIONS
DEFAULT_STRENGTH_FACTOR = _STRENGTH
#: Image-token concepts (a folder learnt on ``--positions image`` rows): the steering strength factor, calibrated
#: on the demo (:mod:`mmconcepts.evaluation.causal.image_tokens`, "Defaults, and why"), and where ablation acts:
#: every image token where the concept is active, or the token object's patches only.
DEFAULT_IMAGE_STRENGTH_FACTOR = 16.0
ABLATE_WHERE = ("active", "object")
#: Test images per evaluation (``None``: all); the same images serve every concept and control.
DEFAULT_N_IMAGES = 60


@dataclass(frozen=True)
class CausalSettings:
    """What the causal evaluation steers with, where, how hard, and on which images; validated once.

    Examples
    --------
    >>> CausalSettings(directions=["concept", "random"], n_images=30).directions
    ('concept', 'random')
    >>> CausalSettings(positions="everywhere")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: unknown positions 'everywhere': choose token, after or all
    """

    directions: tuple[str, ...] = param(DIRECTIONS, flag=None, constraint=Many(Options(DIRECTIONS, noun="direction")),
                                        help="what is added when steering (ablation: with 'concept' only)")
    strength_factor: float = param(DEFAULT_STRENGTH_FACTOR, flag=None, constraint=Interval(float),
                                   help="the added vector's norm in multiples of the concept's typical contribution")
    positions: str = param(DEFAULT_POSITIONS, flag=None, constraint=Options(POSITIONS, noun="positions"),
                           help="where in the caption the intervention acts")
    layer: str | None = param(DEFAULT_LAYER, flag=None, constraint=Text(word=True), optional=True,
                              help="where to steer (None: the dictionary's layer; ablation only there)")
    n_images: int | None = param(DEFAULT_N_IMAGES, flag=None, constraint=Interval(int, 1), optional=True,
                                 help="test images (a seeded sample, one per image; None: all)")
    seed: int = param(0, flag=None, constraint=Interval(int, 0), help="the image sample and the random directions")
    concept_indices: tuple[int, ...] | None = param(None, flag=None, constraint=Many(Interval(int), distinct=False),
                                                    optional=True,
                                                    help="only these concepts (None: every concept)")
    batch_size: int | None = param(None, flag=None, constraint=Interval(int, 1), optional=True,
                                   help="captions per generation batch (None: the batch size the concepts' feature "
                                        "store generated its captions with, as it did on this machine; else 32)")
    ablate: bool = param(True, flag=None, constraint=Boolean(), help="also ablate each concept")
    ablate_where: str = param("active", flag=None, constraint=Options(ABLATE_WHERE, noun="ablate_where"),
                              help="image-token concepts: ablate at every image token where the concept is active, "
                                   "or over the token object's patches")
    image_strength_factor: float = param(DEFAULT_IMAGE_STRENGTH_FACTOR, flag=None, constraint=Interval(float),
                                         help="image-token concepts: the strength factor of steering (added at "
                                              "each of the token object's patches)")

    def __post_init__(self):
        if self.layer is not None:
            object.__setattr__(self, "layer", str(self.layer))
        if self.concept_indices is not None:
            object.__setattr__(self, "concept_indices", tuple(int(k) for k in self.concept_indices))
        validate(self)
