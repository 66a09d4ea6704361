"""What a concept map is made with (:class:`MapSettings`) and what it is (:class:`ConceptMap`); the methods
themselves are in :mod:`mmconcepts.attribution.methods`."""

from __future__ import annotations

from dataclasses import dataclass

from mmconcepts.params import Interval, Options, param, validate

METHODS = ("attribution", "occlusion", "projection")
#: What attribution multiplies the gradient by: ``embedding - reference`` with the reference the embeddings
#: of the *blank* image (every pixel the image's median colour) or zero.
BASELINES = ("blank", "zero")
__all__ = ["BASELINES", "METHODS", "ConceptMap", "MapSettings"]


@dataclass(frozen=True)
class MapSettings:
    """How concept maps are computed.

    Parameters
    ----------
    method : one of :data:`METHODS`.
    baseline : attribution's reference, ``"blank"`` or ``"zero"`` (:data:`BASELINES`).
    steps : attribution's gradient points: 0, the input itself; ``n``, the midpoints of ``n`` equal segments
        from the reference to the input (each one forward and one backward pass).
    batch_size : (image, concept) pairs per forward (and backward) pass; also images per ``generate`` call.
    occlusion_batch : masked copies per forward pass of occlusion (all of an image's copies form one batched
        pass, split in chunks of this size only to bound memory).
    """

    method: str = param("attribution", constraint=Options(METHODS, noun="heatmap method"), flag=None,
                        help="how the map is computed")
    baseline: str = param("blank", constraint=Options(BASELINES, noun="attribution baseline"), flag=None,
                          help="attribution's reference")
    steps: int = param(1, constraint=Interval(int, 0), flag=None, help="attribution's gradient points")
    batch_size: int = param(16, constraint=Interval(int, 1), flag=None, help="(image, concept) pairs per pass")
    occlusion_batch: int = param(128, constraint=Interval(int, 1), flag=None,
                                 help="masked copies per forward pass of occlusion")

    def __post_init__(self):
        validate(self)


@dataclass
class ConceptMap:
    """One concept's map over one image.

    Attributes
    ----------
    method : str
        How it was computed (:data:`METHODS`).
    concept : int
        The concept.
    grid : numpy.ndarray
        ``rows x cols`` values, rows top to bottom.
    box : tuple of float
        ``(x0, y0, x1, y1)``: the region of the original image (its pixels) the grid covers.
    activation : float
        The concept's activation at the token's state, as the method's forward pass computed it.
    size : tuple of int
        ``(width, height)`` of the original image.
    """

    method: str
    concept: int
    grid: object
    box: tuple
    activation: float
    size: tuple

    def to_json(self, digits: int = 5) -> dict:
        """``{"method", "grid", "box"}`` (the ``explain --heatmaps`` entry)."""
        return {"method": self.method, "grid": [[round(float(v), digits) for v in row] for row in self.grid],
                "box": [round(float(v), 3) for v in self.box]}
