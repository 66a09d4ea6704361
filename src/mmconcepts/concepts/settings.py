"""The grounding settings: how concepts are read as words and images, validated once.

``mmconcepts learn`` builds a :class:`GroundingSettings` from its flags before it fits anything (a typo
leaves nothing behind), :func:`~mmconcepts.concepts.ground.ground` applies it, and ``grounding.json``
records it, so every later reading of a concepts folder (the comparison methods of an evaluation, the
Noise-Imgs baseline, a sweep) grounds the same way.

Examples
--------
>>> GroundingSettings(decode="paper").min_ratio_applied
>>> GroundingSettings(min_ratio=2)
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: min_ratio (--min-ratio) must be a number in [0, 1] or None, got 2
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from mmconcepts.params import Boolean, Interval, Options, param, validate

DECODINGS = ("auto", "effect", "centered", "paper", "caption")
VOCABULARIES = ("all", "captions")
#: Default of ``min_ratio``: a grounded word scores at least this share of the concept's best token.
MIN_RATIO = 0.5
#: The most concepts ``decode="auto"`` reads by their captions (a forward pass per concept and top image); a
#: larger dictionary (an SAE of thousands of latents) is read through the unembedding unless ``caption`` is asked.
CAPTION_MAX_CONCEPTS = 512


@dataclass(frozen=True)
class GroundingSettings:
    """How a concept is read.

    Parameters
    ----------
    decode : {"auto", "effect", "centered", "paper", "caption"}
        The decoding through the unembedding (see :mod:`mmconcepts.concepts.decoding`), or, for image-token
        concepts, ``caption``: through the whole model, the words the concept holds up in its images' captions
        (:mod:`mmconcepts.concepts.caption_words`). ``auto``: ``caption`` for concepts learnt on image tokens
        (through the unembedding they read as prompt words, or, in the vision encoder, not at all), unless there
        are more than :data:`CAPTION_MAX_CONCEPTS`; ``effect`` for every other (:meth:`applied`).
    apply_norm : bool or None
        Apply the final norm before the unembedding; ``None``: for ``effect`` unless the features come
        after the norm (layer ``norm``).
    n_words : int
        The most words kept per concept.
    top_k : int
        How many of the best tokens are read.
    min_ratio : float or None
        A word must score at least this share of the concept's first word (``None``: no cut; never applied
        to ``paper``).
    vocabulary : {"all", "captions"}
        ``all``: any word of the tokenizer; ``captions``: the words the model said in the store's captions.
    keep_token : bool
        Allow the token of interest and its ``also`` variants among the words.
    n_images : int
        The most activating training samples kept per concept (visual grounding).
    copy_images : bool
        Carry a small thumbnail of every concept's top images inside the concepts folder (``images/``), so
        the folder explains and reports without the dataset (``--copy-images``).
    """

    decode: str = param("auto", constraint=Options(DECODINGS, noun="decoding"),
                        help="effect: the words the concept makes the model say; centered: W_U u_k minus the mean "
                             "concept's; paper: W_U u_k as CoX-LMM; caption (image-token concepts): the words whose "
                             "probability it holds up in its top images' captions; auto: caption for image-token "
                             "concepts, else effect")
    apply_norm: bool | None = param(None, constraint=Boolean(), optional=True,
                                    help="apply the final norm before decoding",
                                    shown="for --decode effect, unless the layer is already normed")
    n_words: int = param(10, constraint=Interval(int, 1), help="most grounded words per concept")
    top_k: int = param(50, constraint=Interval(int, 1), flag=None, help="how many of the best tokens are read")
    min_ratio: float | None = param(MIN_RATIO, constraint=Interval(float, 0, 1), optional=True,
                                    help="keep words scoring at least this share of the concept's best word (0 keeps "
                                         "every word the concept promotes; not used by --decode paper)")
    vocabulary: str = param("all", constraint=Options(VOCABULARIES, noun="vocabulary"),
                            help="all: any word of the tokenizer; captions: only words the model used in the store's "
                                 "captions")
    keep_token: bool = param(False, constraint=Boolean(),
                             help="allow the token of interest itself among the grounded words")
    n_images: int = param(5, constraint=Interval(int, 1), flag=None,
                          help="the most activating training samples kept per concept")
    copy_images: bool = param(False, constraint=Boolean(),
                              help="carry a small thumbnail of every concept's top images in --out (images/), so "
                                   "the folder explains and reports without the dataset")

    def __post_init__(self):
        validate(self)

    def applied(self, positions: str = "token", n_concepts: int = 0) -> "GroundingSettings":
        """These settings with ``decode="auto"`` resolved for ``n_concepts`` concepts learnt at ``positions``
        (``"token"`` or ``"image"``): ``caption`` for image tokens (at most :data:`CAPTION_MAX_CONCEPTS` of
        them), ``effect`` otherwise.

        >>> GroundingSettings().applied("image", 20).decode, GroundingSettings().applied("token", 20).decode
        ('caption', 'effect')
        >>> GroundingSettings().applied("image", 16384).decode   # an SAE's latents: too many to caption each
        'effect'
        """
        if self.decode != "auto":
            return self
        caption = positions == "image" and n_concepts <= CAPTION_MAX_CONCEPTS
        return replace(self, decode="caption" if caption else "effect")

    @property
    def min_ratio_applied(self) -> float | None:
        """The relative cut in force (the paper's decoding keeps its first ``n_words`` words, no cut)."""
        return None if self.decode == "paper" else self.min_ratio

    def norm_for(self, layer) -> bool:
        """Whether the final norm is applied to concepts learnt at ``layer``."""
        if self.apply_norm is not None:
            return self.apply_norm
        return self.decode in ("effect", "auto") and str(layer) != "norm"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict | None) -> "GroundingSettings":
        """The settings a ``grounding.json`` recorded (fields it lacks take their defaults)."""
        record = record or {}
        if isinstance(record.get("settings"), dict):
            record = record["settings"]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})
