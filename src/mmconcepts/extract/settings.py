"""The extraction settings: which words, which layers, how the model reads the images; validated once and
written into the store's manifest (the run record).

Several words can be extracted in one pass: ``token="dog,cat,bus"`` (or a tuple) generates each caption
once and keeps the representation of every listed word; ``also`` gives each word its variants, as
``{"dog": ("dogs", "puppy"), "cat": ("cats",)}``, or as a plain tuple when there is one word.

Examples
--------
>>> s = ExtractionSettings(token="dog,cat", also={"dog": ["dogs"]})
>>> s.tokens, s.variants
(('dog', 'cat'), {'dog': ('dogs',), 'cat': ()})
>>> ExtractionSettings(token="dog", also=("dogs",)).variants
{'dog': ('dogs',)}
"""

from __future__ import annotations

from dataclasses import dataclass

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.store import DTYPES
from mmconcepts.models.base import DEFAULT_INSTRUCTION
from mmconcepts.models.vision_parts import is_vision_layer
from mmconcepts.params import Boolean, Interval, Many, Options, Text, param, validate

MODES = ("generate", "teacher")
KEEP_RULES = ("both", "generated")
#: Where an extraction reads: the state predicting each word (``token``) or every image token of the prompt
#: (``image``, :mod:`~mmconcepts.extract.image_rows`).
POSITIONS = ("token", "image")
#: Counts of a whole run (``scanned``, ``skipped_images``) and of each word (the others). Teacher mode cuts a
#: reference caption longer than the model's context at the last token that fits (``truncated_captions``: the
#: captions cut); a word that then lies past the cut is not kept (``beyond_context``). ``kept``,
#: ``generated_not_in_reference``, ``not_generated``, ``not_in_reference`` and ``beyond_context`` partition
#: a word's readable images.
RUN_COUNTS = ("scanned", "skipped_images")
WORD_COUNTS = ("kept", "generated_not_in_reference", "not_generated", "not_in_reference", "beyond_context",
               "truncated_captions")
COUNT_KEYS = ("scanned", "kept", "generated_not_in_reference", "not_generated", "not_in_reference",
              "beyond_context", "truncated_captions", "skipped_images")


def _words(value, what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value or ())
    words = tuple(w.strip() for w in items if isinstance(w, str) and w.strip())
    if any(len(w.split()) != 1 for w in words) or any(not isinstance(w, str) for w in items):
        raise MMConceptsError(f"each {what} must be one word, got {value!r}")
    return words


def parse_also(values, tokens: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The variants of each word from ``--also`` values: ``"dogs,puppy"`` (one word of interest) or
    ``"dog=dogs,puppy"`` (repeatable, one per word)."""
    values = [values] if isinstance(values, str) else list(values or ())
    variants: dict[str, tuple[str, ...]] = {t: () for t in tokens}
    for value in values:
        if "=" in value:
            word, _, rest = value.partition("=")
            word = word.strip()
            if word not in variants:
                raise MMConceptsError(f"--also {value!r} names {word!r}, which is not a --token ({', '.join(tokens)})")
            variants[word] += _words(rest, "--also variant")
        elif len(tokens) == 1:
            variants[tokens[0]] += _words(value, "--also variant")
        elif value.strip():
            raise MMConceptsError(f"--also {value!r}: with several tokens say whose variants they are, e.g. "
                                  f"--also {tokens[0]}={value}")
    return variants


@dataclass(frozen=True)
class ExtractionSettings:
    """What an extraction reads and keeps.

    Parameters
    ----------
    token : the word of interest (``"dog"``), or several (``"dog,cat,bus"`` or a tuple): one pass keeps them
        all, each row tagged with its word.
    also : the variants that count as the word: a tuple for one word, ``{word: variants}`` for several (or
        ``--also`` strings, see :func:`parse_also`).
    layers : layer names or indices (``-1``, ``"norm"``; with ``positions="image"`` also ``"vision.I"`` and
        ``"projector"``, :mod:`~mmconcepts.models.vision_parts`), all recorded in the same pass.
    mode : ``"generate"`` (greedy captions) or ``"teacher"`` (the first reference caption holding the word).
    keep : ``"both"`` keeps a sample when the word is in the generated caption and in a reference caption
        (the paper's rule); ``"generated"`` drops the second condition.
    positions : ``"token"`` keeps the state from which each word is predicted (one row per image and word);
        ``"image"`` keeps the state of every image token of the prompt (one row per image, word and image token,
        with its box on the image).
    instruction : the user message under the image (the model's chat template wraps it).
    max_new_tokens, min_new_tokens : caption lengths (generate mode).
    batch_size : images per forward pass.
    dtype : storage dtype of the features.
    shard_size : samples per shard file.
    commit_every : progress is committed at least every this many scanned images (see
        :class:`~mmconcepts.extract.store.FeatureStoreWriter`).
    strict : fail on an unreadable image instead of skipping and counting it.
    num_workers : DataLoader workers that read and preprocess images (0: in the main process).
    """

    token: object = param(help="the word of interest, e.g. dog; or several, comma-separated (dog,cat,bus): one pass "
                               "keeps them all, each row tagged with its word")
    also: object = param((), help="variants that count as the word: dogs,puppy for one token; dog=dogs,puppy "
                                  "(repeatable) for several", metavar="VARIANTS", action="append",
                        flag_default=[])
    layers: tuple = param(("norm",), help="comma-separated layers, all recorded in one pass, e.g. -1,norm",
                          parse=Many(Text()), metavar="L,M,...")
    mode: str = param("generate", constraint=Options(MODES, noun="mode"),
                      help="generate: the model's own greedy caption; teacher: read the first reference caption "
                           "that holds the word")
    keep: str = param("both", constraint=Options(KEEP_RULES, noun="keep rule"),
                      help="both: the word must also be in a reference caption (the paper's rule); generated: the "
                           "generated caption is enough")
    positions: str = param("token", constraint=Options(POSITIONS, noun="positions"),
                           help="token: the state from which the word is predicted; image: the state of every image "
                                "token of the prompt (one row per image token, with its box) in the images kept")
    instruction: str = param(DEFAULT_INSTRUCTION, constraint=Text(), help="the user message under the image")
    max_new_tokens: int = param(50, constraint=Interval(int, 1), help="longest caption in tokens")
    min_new_tokens: int = param(0, constraint=Interval(int, 0),
                                help="generate at least this many tokens (benchmarks use it to fix the length)")
    batch_size: int = param(16, constraint=Interval(int, 1), help="images per forward pass")
    dtype: str = param("float16", constraint=Options(DTYPES, noun="storage dtype"),
                       help="storage dtype of the features")
    shard_size: int = param(1024, constraint=Interval(int, 1), help="samples per shard file")
    commit_every: int = param(256, constraint=Interval(int, 1),
                              help="commit progress at least every N scanned images, so a crash loses at most N")
    strict: bool = param(False, constraint=Boolean(), help="fail on an unreadable image instead of skipping it")
    num_workers: int = param(0, constraint=Interval(int, 0),
                             help="DataLoader workers that read and preprocess images while the model runs (0: in "
                                  "the main process)")

    def __post_init__(self):
        validate(self)
        if self.min_new_tokens > self.max_new_tokens:
            raise MMConceptsError(f"--min-new-tokens ({self.min_new_tokens}) exceeds --max-new-tokens "
                                  f"({self.max_new_tokens})")
        if not isinstance(self.token, (str, tuple, list)):
            raise MMConceptsError(f"the token of interest must be one word, got {self.token!r}")
        tokens = _words(self.token, "token of interest")
        if not tokens or len(set(tokens)) != len(tokens):
            raise MMConceptsError(f"give one or more distinct words of interest, got {self.token!r}")
        if isinstance(self.also, dict):
            unknown = [w for w in self.also if w not in tokens]
            if unknown:
                raise MMConceptsError(f"also names {unknown[0]!r}, which is not a token ({', '.join(tokens)})")
            variants = {t: _words(self.also.get(t, ()), "also variant") for t in tokens}
        elif len(tokens) == 1:
            variants = {tokens[0]: _words(self.also, "also variant")}
        elif self.also:
            raise MMConceptsError("with several tokens give also as {word: variants}")
        else:
            variants = {t: () for t in tokens}
        object.__setattr__(self, "token", tokens[0] if len(tokens) == 1 else tokens)
        object.__setattr__(self, "also", variants[tokens[0]] if len(tokens) == 1 else variants)
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise MMConceptsError("layers (--layers) must be one or more layers, e.g. -1,norm")
        image_side = [str(x) for x in self.layers if is_vision_layer(str(x).strip().lower())]
        if image_side and self.positions != "image":
            raise MMConceptsError(f"layer {image_side[0]} is on the image side, read at image tokens only: add "
                                  "--positions image, or read decoder layers")

    @property
    def tokens(self) -> tuple[str, ...]:
        """The words of interest, in order."""
        return (self.token,) if isinstance(self.token, str) else tuple(self.token)

    @property
    def variants(self) -> dict[str, tuple[str, ...]]:
        """Each word's variants."""
        return {self.token: tuple(self.also)} if isinstance(self.token, str) else dict(self.also)


def store_counts(run: dict, words: dict) -> dict:
    """A store's counts: the run's (``scanned``, ``skipped_images``), each word's under ``tokens``, and their
    sums (for one word, its own)."""
    total = {k: sum(c[k] for c in words.values()) for k in WORD_COUNTS}
    return {"scanned": run["scanned"], **total, "skipped_images": run["skipped_images"],
            "tokens": {t: dict(c) for t, c in words.items()}}
