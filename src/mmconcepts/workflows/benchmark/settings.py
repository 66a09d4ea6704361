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
>>> method_name("import:/runs/my-sae"), imported_source("import:/runs/my-sae"), imported_source("pca")
('import:my-sae', '/runs/my-sae', None)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmconcepts.concepts.settings import DECODINGS
from mmconcepts.decompose.settings import POOLS
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.settings import BASELINES
from mmconcepts.extract.settings import POSITIONS
from mmconcepts.models.options import ModelOptions
from mmconcepts.params import Boolean, Interval, Many, Options, Text, param, validate

DEFAULT_TOKENS = ("circle", "square", "triangle", "star")
DEFAULT_METHODS = ("semi-nmf", "kmeans", "pca", "simple", "nmf", "topk-sae")
DEFAULT_BASELINES = ("rnd-words", "noise-imgs", "gt-captions")
#: Entries that are places or versions, not settings: a resumed benchmark may run elsewhere.
NOT_SETTINGS = frozenset({"model.device", "format_version"})
#: How a method entry names an SAE trained elsewhere: ``import:PATH`` (:func:`imported_source`).
IMPORT_PREFIX = "import:"


def imported_source(method: str) -> str | None:
    """The folder of an ``import:PATH`` method entry (an SAE in SAELens, sparsify or dictionary_learning layout,
    :func:`~mmconcepts.exchange.import_sae.import_sae`), or ``None`` for a method that is learnt."""
    return method[len(IMPORT_PREFIX):] if method.startswith(IMPORT_PREFIX) else None


def method_name(method: str) -> str:
    """The name a method entry has in the records and tables: ``import:<folder name>`` for an imported SAE,
    the entry itself otherwise."""
    source = imported_source(method)
    return method if source is None else IMPORT_PREFIX + Path(source).name


def _check_import(method: str) -> str:
    """``import:PATH`` with ``PATH`` made absolute (a resumed benchmark may start elsewhere); a one-line error
    when the folder is missing."""
    source = imported_source(method)
    if not source:
        raise MMConceptsError(f"method {method!r} names no folder: write import:PATH, PATH an SAE folder in "
                              "SAELens, sparsify or dictionary_learning layout")
    path = Path(source).expanduser()
    if not path.is_dir():
        raise MMConceptsError(f"method {method!r}: no SAE folder at {path}; give the folder of an SAE in SAELens, "
                              "sparsify or dictionary_learning layout")
    return IMPORT_PREFIX + str(path.resolve())


@dataclass(frozen=True)
class BenchmarkSettings:
    """What a benchmark runs: every (token, seed, K, method) cell, and how.

    Parameters
    ----------
    tokens : the words of interest; one extraction per data seed reads them all.
    seeds : data seeds (a fresh ShapesWorld train / test pair each, as the demo makes them) and the
        dictionaries' seeds; with ``data`` given, dictionary seeds only.
    methods : registry names (``semi-nmf``, ``pca``, ``relu-sae``, ...), ``package.module:ClassName`` of your own,
        or ``import:PATH``, an SAE trained elsewhere (a folder in SAELens, sparsify or dictionary_learning layout),
        imported on each cell's training store at ``layer`` instead of learnt
        (:func:`~mmconcepts.exchange.import_sae.import_sae`): its K is its own ``d_sae`` whatever ``n_concepts``
        says, and no seed changes it (its spread over seeds is the data's only; none with ``data`` given); it is
        ``import:<folder name>`` in the tables. The first of ``semi-nmf`` or ``methods[0]`` is the main method,
        the one the baselines follow.
    n_concepts : the numbers of concepts K (the summary is for the first; every K is in ``summary_by_k``).
    model : :class:`~mmconcepts.models.ModelOptions` (or an id / folder); default the embedded captioner.
    data, test_data : training and test datasets (both or neither); ``None``: ShapesWorld per seed.
    n_train, n_test : ShapesWorld images per seed (train, test).
    layer : the stored layer the dictionaries are learnt on.
    positions : ``token`` (the word's state) or ``image`` (every image token; the patch metrics).
    pool : ``positions="image"``: how an image's concept activations pool its patches' (``max`` or ``mean``;
        ``learn --pool``).
    decode : how every method's concepts are read as words (``learn --decode``; ``auto``: ``effect`` for word
        concepts, ``caption`` for image-token ones).
    extended : also the extended metrics (stability, probing, fixed-word precision, coverage per kind).
    baselines : any of ``rnd-words``, ``noise-imgs``, ``gt-captions`` (``()`` for none).
    fidelity : also splice each method's reconstruction into the model (``evaluate --fidelity``): every number
        of its fidelity row as ``fidelity_<field>`` (``fidelity_explained_variance``, ``fidelity_kl_divergence``,
        ...). Off by default: it runs the whole model over the test images in every cell.
    autointerp : also name each concept from its top images with the studied model and score the names
        (``evaluate --autointerp``: ``name_truth``, ``word_truth``, ``name_detection``, ``word_detection``,
        ``named_concepts``). Off by default: it captions images in every cell.
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
                                     help="comma-separated methods; package.module:ClassName adds a class of your own, "
                                          "import:PATH an SAE trained elsewhere (SAELens, sparsify, "
                                          "dictionary_learning folder; its own K)")
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
    positions: str = param("token", constraint=Options(POSITIONS, noun="positions"),
                           help="token: the state the word is predicted from; image: every image token of the kept "
                                "images (patch precision, coverage and pointing beside random directions)")
    decode: str = param("auto", constraint=Options(DECODINGS, noun="decoding"),
                        help="how concepts are read as words (learn --decode; auto: by their captions for "
                             "--positions image)")
    pool: str = param("max", constraint=Options(POOLS, noun="pooling"),
                      help="--positions image: an image's concept activation is its patches' max or mean "
                           "(learn --pool)")
    extended: bool = param(True, constraint=Boolean(),
                           help="also stability, sparse probing, fixed-word precision and coverage per attribute kind")
    fidelity: bool = param(False, constraint=Boolean(),
                           help="also each method's reconstruction spliced into the model (evaluate --fidelity): "
                                "explained variance, L0, dead concepts, KL, loss recovered, as fidelity_<field>")
    autointerp: bool = param(False, constraint=Boolean(),
                             help="also concept names written by the studied model from the top images, scored "
                                  "against the truth and by detection (evaluate --autointerp)")
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
        methods = tuple(_check_import(m) if imported_source(m) is not None else m for m in self.methods)
        for method in methods:
            if imported_source(method) is None:
                method_class(method)  # one-line errors for an unknown name or a user's class that cannot load
        names = [method_name(m) for m in methods]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MMConceptsError(f"two methods are both named {twice[0]!r} in the tables: give each imported SAE a "
                                  "folder of its own name")
        object.__setattr__(self, "methods", methods)
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
    def method_names(self) -> tuple[str, ...]:
        """The methods as the records and tables name them (:func:`method_name`), in order."""
        return tuple(method_name(m) for m in self.methods)

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
