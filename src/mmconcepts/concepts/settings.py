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

from dataclasses import asdict, dataclass, fields

from mmconcepts.errors import MMConceptsError

DECODINGS = ("effect", "centered", "paper")
VOCABULARIES = ("all", "captions")
#: Default of ``min_ratio``: a grounded word scores at least this share of the concept's best token.
MIN_RATIO = 0.5


def _positive_int(name: str, flag: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MMConceptsError(f"{name} ({flag}) must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class GroundingSettings:
    """How a concept is read.

    Parameters
    ----------
    decode : {"effect", "centered", "paper"}
        The decoding through the unembedding (see :mod:`mmconcepts.concepts.decoding`).
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

    decode: str = "effect"
    apply_norm: bool | None = None
    n_words: int = 10
    top_k: int = 50
    min_ratio: float | None = MIN_RATIO
    vocabulary: str = "all"
    keep_token: bool = False
    n_images: int = 5
    copy_images: bool = False

    def __post_init__(self):
        if self.decode not in DECODINGS:
            raise MMConceptsError(f"unknown decoding {self.decode!r}: choose {', '.join(DECODINGS)}")
        ratio = self.min_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not 0 <= ratio <= 1):
            raise MMConceptsError(f"min_ratio (--min-ratio) must be a number in [0, 1] or None, got {ratio!r}")
        _positive_int("n_words", "--n-words", self.n_words)
        _positive_int("top_k", "top_k", self.top_k)
        _positive_int("n_images", "n_images", self.n_images)
        if self.vocabulary not in VOCABULARIES:
            raise MMConceptsError(f"unknown vocabulary {self.vocabulary!r}: choose {' or '.join(VOCABULARIES)}")
        if self.apply_norm is not None and not isinstance(self.apply_norm, bool):
            raise MMConceptsError(f"apply_norm must be true, false or None, got {self.apply_norm!r}")
        if not isinstance(self.copy_images, bool):
            raise MMConceptsError(f"copy_images (--copy-images) must be true or false, got {self.copy_images!r}")

    @property
    def min_ratio_applied(self) -> float | None:
        """The relative cut in force (the paper's decoding keeps its first ``n_words`` words, no cut)."""
        return None if self.decode == "paper" else self.min_ratio

    def norm_for(self, layer) -> bool:
        """Whether the final norm is applied to concepts learnt at ``layer``."""
        if self.apply_norm is not None:
            return self.apply_norm
        return self.decode == "effect" and str(layer) != "norm"

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
