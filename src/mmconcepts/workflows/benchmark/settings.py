"""The benchmark's settings: which words, seeds, methods and sizes, on which model and data; validated once.

:class:`BenchmarkSettings` is written into ``DIR/settings.json`` when a benchmark starts; running it again
into the same folder resumes it, and refuses any changed setting by name (:func:`changed_setting`), as a
feature store's ``--resume`` does. The command line is generated from the fields' ``metadata`` (flag kind
and help), so each flag and its default are said once.

Examples
--------
>>> s = BenchmarkSettings(tokens=("circle", "star"), seeds=(0,), methods=("semi-nmf", "pca"))
>>> s.main_method, s.n_runs
('semi-nmf', 4)
>>> BenchmarkSettings(seeds=(0, 0))
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: seeds must be distinct integers >= 0, got (0, 0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.options import ModelOptions

DEFAULT_TOKENS = ("circle", "square", "triangle", "star")
DEFAULT_METHODS = ("semi-nmf", "kmeans", "pca", "simple", "nmf", "topk-sae")
DEFAULT_BASELINES = ("rnd-words", "noise-imgs", "gt-captions")
#: Settings that are places, not settings: a resumed benchmark may run them elsewhere.
PLACES = frozenset({"model.device"})


def _cli(kind: str, help: str, short: str | None = None) -> dict:
    """Field metadata the command line is generated from (``kind``: words, ints (>= 0), counts (>= 1), int
    (>= 1), text, path, flag; ``short``: a one-letter alias, as ``-k`` of ``--n-concepts`` everywhere)."""
    return {"cli": kind, "help": help, "short": short}


@dataclass(frozen=True)
class BenchmarkSettings:
    """What a benchmark runs: every (token, seed, K, method) cell, and how.

    Parameters
    ----------
    tokens : the words of interest; one extraction per data seed reads them all.
    seeds : data seeds (a fresh ShapesWorld train / test pair each, as the demo makes them) and the
        dictionaries' seeds; with ``data`` given, dictionary seeds only.
    methods : registry names (``semi-nmf``, ``pca``, ...) or ``package.module:ClassName`` of your own; the
        first of ``semi-nmf`` or ``methods[0]`` is the main method, the one the baselines follow.
    n_concepts : the numbers of concepts K (the summary is for the first; every K is in ``summary_by_k``).
    model : :class:`~mmconcepts.models.ModelOptions` (or an id / folder); default the embedded captioner.
    data, test_data : training and test datasets (both or neither); ``None``: ShapesWorld per seed.
    n_train, n_test : ShapesWorld images per seed (train, test).
    layer : the stored layer the dictionaries are learnt on.
    extended : also the extended metrics (stability, probing, fixed-word precision, coverage per kind).
    baselines : any of ``rnd-words``, ``noise-imgs``, ``gt-captions`` (``()`` for none).
    n_noise : noise images of the Noise-Imgs baseline (``None``: as many as training samples, at most 512, as
        ``evaluate`` does). 128 by default: the baselines were the slowest stage at 512, and the baseline's
        numbers do not move beyond their spread (circle, seed 0: precision@1 0.630 at 128, 256 and 512).
    batch_size, max_new_tokens : extraction batch and caption length.
    """

    tokens: tuple[str, ...] = field(default=DEFAULT_TOKENS, metadata=_cli(
        "words", "comma-separated words of interest, all read in one extraction per data seed"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_cli(
        "ints", "comma-separated seeds: one ShapesWorld train/test pair each (as the demo's) and the "
                "dictionaries' seed"))
    methods: tuple[str, ...] = field(default=DEFAULT_METHODS, metadata=_cli(
        "words", "comma-separated methods; package.module:ClassName adds a class of your own"))
    n_concepts: tuple[int, ...] = field(default=(20,), metadata=_cli(
        "counts", "comma-separated numbers of concepts K (the summary is for the first)", short="-k"))
    model: ModelOptions = field(default_factory=ModelOptions)
    data: str | None = field(default=None, metadata=_cli(
        "path", "training dataset instead of ShapesWorld (with --test-data); seeds are then dictionary seeds"))
    test_data: str | None = field(default=None, metadata=_cli("path", "test dataset (with --data)"))
    n_train: int = field(default=1200, metadata=_cli("int", "ShapesWorld training images per seed"))
    n_test: int = field(default=300, metadata=_cli("int", "ShapesWorld test images per seed"))
    layer: str = field(default="norm", metadata=_cli("text", "the layer the dictionaries are learnt on"))
    extended: bool = field(default=True, metadata=_cli(
        "flag", "also stability, sparse probing, fixed-word precision and coverage per attribute kind"))
    baselines: tuple[str, ...] = field(default=DEFAULT_BASELINES, metadata=_cli(
        "words", "comma-separated baselines ('' for none)"))
    n_noise: int | None = field(default=128, metadata=_cli(
        "int", "noise images of the noise-imgs baseline (evaluate's own default is as many as training samples, "
               "at most 512)"))
    batch_size: int = field(default=64, metadata=_cli("int", "images per extraction batch"))
    max_new_tokens: int = field(default=40, metadata=_cli("int", "longest caption the model writes"))

    def __post_init__(self):
        from mmconcepts.decompose.custom import resolve_method
        from mmconcepts.evaluation.evaluate import BASELINES

        def positive_ints(name, values, low):
            values = tuple(values) if isinstance(values, (tuple, list)) else values
            if not isinstance(values, tuple) or not values or len(set(values)) != len(values) or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
                raise MMConceptsError(f"{name} must be distinct integers >= {low}, got {values!r}")
            object.__setattr__(self, name, values)

        def words(name, values, allow_empty=False):
            values = (values,) if isinstance(values, str) else tuple(values)
            if (not values and not allow_empty) or len(set(values)) != len(values) or any(
                    not isinstance(v, str) or not v or len(v.split()) != 1 for v in values):
                raise MMConceptsError(f"{name} must be distinct single words, got {values!r}")
            object.__setattr__(self, name, values)

        words("tokens", self.tokens)
        words("methods", self.methods)
        words("baselines", self.baselines, allow_empty=True)
        positive_ints("seeds", self.seeds, 0)
        positive_ints("n_concepts", self.n_concepts, 1)
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise MMConceptsError(f"unknown baseline {unknown[0]!r}: choose from {', '.join(BASELINES)}")
        for method in self.methods:
            resolve_method(method)  # one-line errors for an unknown name or a user's class that cannot load
        for name in ("n_train", "n_test", "batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MMConceptsError(f"{name} must be an integer >= 1, got {value!r}")
        if self.n_noise is not None and (isinstance(self.n_noise, bool) or not isinstance(self.n_noise, int)
                                         or self.n_noise < 1):
            raise MMConceptsError(f"n_noise must be an integer >= 1, got {self.n_noise!r}")
        if (self.data is None) != (self.test_data is None):
            raise MMConceptsError("give --data and --test-data together (or neither, for ShapesWorld)")
        for name in ("data", "test_data"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(Path(getattr(self, name)).resolve()))
        if not isinstance(self.extended, bool):
            raise MMConceptsError(f"extended must be true or false, got {self.extended!r}")
        object.__setattr__(self, "layer", str(self.layer))
        if not isinstance(self.model, ModelOptions):
            object.__setattr__(self, "model", ModelOptions(model=self.model))
        if self.model.model is None and self.model.revision is not None:  # no store to follow: the shipped model
            from mmconcepts.models.loading import shipped_revision_error

            raise MMConceptsError(shipped_revision_error(self.model.revision))

    @property
    def main_method(self) -> str:
        """The method the baselines follow: ``semi-nmf`` when benchmarked, else the first method."""
        return "semi-nmf" if "semi-nmf" in self.methods else self.methods[0]

    @property
    def shapesworld(self) -> bool:
        """Whether the data is ShapesWorld, generated per seed."""
        return self.data is None

    @property
    def n_runs(self) -> int:
        """The number of (token, seed, K, method) cells."""
        return len(self.tokens) * len(self.seeds) * len(self.n_concepts) * len(self.methods)

    def to_json(self) -> dict:
        """The settings as JSON, as ``settings.json`` and ``benchmark.json`` keep them.

        Returns
        -------
        dict
            Every field; tuples as lists, the model options as a dict.
        """
        record = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


def changed_setting(old: dict, new: dict, prefix: str = "") -> tuple[str, object, object] | None:
    """The first setting on which two :meth:`BenchmarkSettings.to_json` records differ.

    Parameters
    ----------
    old, new : dict
    prefix : str
        Prepended to the names (for nested records).

    Returns
    -------
    (str, object, object) or None
        The dotted name and both values; ``None`` when they agree (:data:`PLACES` may differ).

    Examples
    --------
    >>> changed_setting({"seeds": [0, 1], "model": {"device": "cpu"}}, {"seeds": [0], "model": {"device": "cuda"}})
    ('seeds', [0, 1], [0])
    """
    for key in dict.fromkeys([*old, *new]):
        name = prefix + key
        if name in PLACES or name == "format_version":
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = changed_setting(a, b, name + ".")
            if found:
                return found
        elif a != b:
            return name, a, b
    return None
