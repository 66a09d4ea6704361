"""The benchmark's settings: which words, seeds, methods and sizes, on which model and data; validated once.

:class:`BenchmarkSettings` is written into ``DIR/settings.json`` when a benchmark starts; running it again
into the same folder resumes it, and refuses any changed setting by name
(:func:`~mmconcepts.records.changed_setting`, :data:`NOT_SETTINGS` aside), as a feature store's ``--resume``
does. The command line is generated from the fields' declarations (:func:`mmconcepts.params.param`: help,
constraint, flag), so each flag and its default are said once.

Examples
--------
>>> s = BenchmarkSettings(tokens=("circle", "star"), seeds=(0,), methods=("semi-nmf", "pca"))
>>> s.main_method, s.n_runs
('semi-nmf', 4)
>>> BenchmarkSettings(seeds=(0, 0))
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: seeds (--seeds) must be distinct integers >= 0, got (0, 0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.settings import BASELINES
from mmconcepts.models.options import ModelOptions
from mmconcepts.params import Boolean, Interval, Many, Options, Text, param, validate

DEFAULT_TOKENS = ("circle", "square", "triangle", "star")
DEFAULT_METHODS = ("semi-nmf", "kmeans", "pca", "simple", "nmf", "topk-sae")
DEFAULT_BASELINES = ("rnd-words", "noise-imgs", "gt-captions")
#: Entries that are places or versions, not settings: a resumed benchmark may run elsewhere.
NOT_SETTINGS = frozenset({"model.device", "format_version"})


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

    tokens: tuple[str, ...] = param(DEFAULT_TOKENS, constraint=Many(Text(word=True)),
                                    help="comma-separated words of interest, all read in one extraction per data seed")
    seeds: tuple[int, ...] = param((0, 1, 2), constraint=Many(Interval(int, 0)),
                                   help="comma-separated seeds: one ShapesWorld train/test pair each (as the demo's) "
                                        "and the dictionaries' seed")
    methods: tuple[str, ...] = param(DEFAULT_METHODS, constraint=Many(Text(word=True)),
                                     help="comma-separated methods; package.module:ClassName adds a class of your own")
    n_concepts: tuple[int, ...] = param((20,), constraint=Many(Interval(int, 1)), short="-k",
                                        help="comma-separated numbers of concepts K (the summary is for the first)")
    model: ModelOptions = field(default_factory=ModelOptions)
    data: str | None = param(None, constraint=Text(), optional=True, metavar="DIR",
                             help="training dataset instead of ShapesWorld (with --test-data); seeds are then "
                                  "dictionary seeds")
    test_data: str | None = param(None, constraint=Text(), optional=True, metavar="DIR",
                                  help="test dataset (with --data)")
    n_train: int = param(1200, constraint=Interval(int, 1), help="ShapesWorld training images per seed")
    n_test: int = param(300, constraint=Interval(int, 1), help="ShapesWorld test images per seed")
    layer: str = param("norm", metavar="NAME", help="the layer the dictionaries are learnt on")
    extended: bool = param(True, constraint=Boolean(),
                           help="also stability, sparse probing, fixed-word precision and coverage per attribute kind")
    baselines: tuple[str, ...] = param(DEFAULT_BASELINES, constraint=Many(Options(BASELINES, noun="baseline"),
                                                                          empty=True),
                                       help="comma-separated baselines ('' for none)")
    n_noise: int | None = param(128, constraint=Interval(int, 1), optional=True,
                                help="noise images of the noise-imgs baseline (evaluate's own default is as many as "
                                     "training samples, at most 512)")
    batch_size: int = param(64, constraint=Interval(int, 1), help="images per extraction batch")
    max_new_tokens: int = param(40, constraint=Interval(int, 1), help="longest caption the model writes")

    def __post_init__(self):
        from mmconcepts.decompose.registry import method_class

        validate(self)
        for method in self.methods:
            method_class(method)  # one-line errors for an unknown name or a user's class that cannot load
        if (self.data is None) != (self.test_data is None):
            raise MMConceptsError("give --data and --test-data together (or neither, for ShapesWorld)")
        for name in ("data", "test_data"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(Path(getattr(self, name)).resolve()))
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
