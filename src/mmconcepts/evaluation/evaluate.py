"""``mmconcepts evaluate``: how grounded and how disentangled are the concepts, next to baselines.

Given a grounded concepts folder (learnt on a training store) and a test store (same model, same token),
:func:`evaluate` makes every other set of concepts it compares an ordinary concepts folder, by the same
:func:`~mmconcepts.decompose.learn` and :func:`~mmconcepts.concepts.ground` calls as the main one, with the
same defaults, number of concepts, seed, device and grounding settings:

- ``concepts/<method>/``: each comparison method, learnt on the training store;
- ``baselines/noise-imgs/``: the Noise-Imgs baseline, a store of uniform-noise images read with the
  training captions (:mod:`mmconcepts.data.noise`) and the main method learnt on it;

then scores them all with the pure :func:`~mmconcepts.evaluation.grounding.scoring.score` on the test samples, with
two more baselines: **rnd-words** (each main concept's words replaced by as many random words of the same
pool) and **gt-captions** (the reference captions in place of the words). Output (see
:mod:`mmconcepts.evaluation.results`): ``metrics.json``, ``metrics.md``, ``overlap.json``,
``explanations.json`` and those folders, written to a temp folder and moved into place at the end.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError, check_count
from mmconcepts.evaluation.results import EvaluationResult
from mmconcepts.files import link, write_json
from mmconcepts.outputs import FolderLock, OutputFolder, check_writable_target

DEFAULT_METHODS = ("semi-nmf", "pca", "kmeans", "simple")
BASELINES = ("rnd-words", "noise-imgs", "gt-captions")
#: The causal evaluation's controls for the main method, and their rows under ``baselines`` in metrics.json:
#: the concept's direction less the mean state (``centred``), a random direction, and the mean difference.
CONTROLS = ("centred", "random", "diffmean")
CONTROL_ROWS = {"centred": "centred-direction", "random": "random-direction", "diffmean": "diffmean"}


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation compares and how it scores; validated once, written into ``metrics.json``.

    Parameters
    ----------
    methods : the dictionary methods to compare (the main one among them or not).
    baselines : any of ``rnd-words``, ``noise-imgs``, ``gt-captions``.
    clip_model, bert_model : CLIP and BERTScore models (hub ids or folders); ``None``: no such score.
    bert_layers : the BERTScore layer (``None``: the model's default).
    seed : seed of the comparison methods, the random words and the noise.
    n_noise : noise images (``None``: as many as training samples, at most 512).
    n_explanations : test samples whose local explanation is kept.
    causal : also run the causal evaluation (:mod:`mmconcepts.evaluation.causal.interventions`: steer and ablate with each
        concept, read the captions): ``steering_success``, ``ablation_success``, ``specificity`` and
        ``fluency`` in each method's row, and the ``centred-direction``, ``random-direction`` and ``diffmean``
        baselines. Needs the whole model.
    causal_images : test images the causal evaluation intervenes on (a seeded sample; the same for every
        concept and control).
    causal_methods : the methods whose concepts the causal evaluation steers with (``None``: every compared
        method); the main method's controls are always measured.
    heatmaps : concept-map methods (:data:`~mmconcepts.attribution.METHODS`) to measure on ShapesWorld:
        the pointing game and energy inside of each test image's top-1 concept
        (:mod:`mmconcepts.evaluation.attribution.map_scores`) into ``metrics.json``'s ``heatmaps``, and ``maps.json`` (the
        first method's maps of the concepts' top images and of the explanations) for the report. Needs the
        whole model.
    extended : also compute the extended metrics of every method (not the baselines):
        :func:`~mmconcepts.evaluation.extended.collect.extended_metrics` (words per concept, strict and fixed-word
        precision and overlap, coverage per attribute kind, sparse probing, stability), merged into its row.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    baselines: tuple[str, ...] = BASELINES
    clip_model: str | None = None
    bert_model: str | None = None
    bert_layers: int | None = None
    seed: int = 0
    n_noise: int | None = None
    n_explanations: int = 8
    causal: bool = False
    causal_images: int = 60
    causal_methods: tuple[str, ...] | None = None
    extended: bool = False
    heatmaps: tuple[str, ...] = ()

    def __post_init__(self):
        from mmconcepts.decompose import METHODS

        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        unknown = [m for m in self.methods if m not in METHODS] + [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise MMConceptsError(f"unknown method or baseline {unknown[0]!r}: choose from "
                                  f"{', '.join(list(METHODS) + list(BASELINES))}")
        if self.causal_methods is not None:
            object.__setattr__(self, "causal_methods", tuple(self.causal_methods))
            stray = [m for m in self.causal_methods if m not in self.methods]
            if stray:
                raise MMConceptsError(f"causal method {stray[0]!r} is not among the compared methods "
                                      f"({', '.join(self.methods)}); add it to --methods")
        if isinstance(self.causal_images, bool) or not isinstance(self.causal_images, int) or self.causal_images < 1:
            raise MMConceptsError("causal_images (--causal-images) must be an integer >= 1, got "
                                  f"{self.causal_images!r}")
        check_count("bert_layers (--bert-layers)", self.bert_layers, 1, optional=True)
        for name in ("seed", "n_explanations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MMConceptsError(f"{name} must be an integer >= 0, got {value!r}")
        if self.n_noise is not None and (isinstance(self.n_noise, bool) or not isinstance(self.n_noise, int)
                                         or self.n_noise < 1):
            raise MMConceptsError(f"n_noise must be an integer >= 1, got {self.n_noise!r}")
        from mmconcepts.attribution import METHODS as MAP_METHODS

        object.__setattr__(self, "heatmaps", tuple(self.heatmaps))
        bad = [m for m in self.heatmaps if m not in MAP_METHODS]
        if bad:
            raise MMConceptsError(f"unknown heatmap method {bad[0]!r}: choose {', '.join(MAP_METHODS)}")
        if not isinstance(self.extended, bool):
            raise MMConceptsError(f"extended must be true or false, got {self.extended!r}")


def _scorers(settings: EvaluationSettings, device: str):
    from mmconcepts.evaluation.grounding.scoring import Scorers

    scorers = Scorers()
    if settings.clip_model is not None:
        from mmconcepts.evaluation.grounding.model_scores import CLIPScorer

        scorers.clip = CLIPScorer(settings.clip_model, device=device)
    if settings.bert_model is not None:
        from mmconcepts.evaluation.grounding.model_scores import BERTScorer

        scorers.bert = BERTScorer(settings.bert_model, num_layers=settings.bert_layers, device=device)
    return scorers


def _same_run(cs, method: str, store, out: Path, adapter, seed: int, device: str, n_concepts: int | None = None):
    """Learn ``method`` on ``store`` into ``out`` as the main folder ``cs`` was learnt (its K, device and,
    for the main method itself, its parameters and sparsity rule), ground it with the main folder's
    grounding settings, and return the new :class:`~mmconcepts.concepts.concept_set.ConceptSet`."""
    from mmconcepts.decompose import learn
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.concepts.ground import ground
    from mmconcepts.concepts.settings import GroundingSettings

    summary = cs.summary
    kwargs = {}
    if method == summary["method"]:
        params = summary.get("params") or {}
        kwargs = {k: v for k, v in params.items() if k not in {"n_concepts", "device", "seed", "l1"}}
        if summary.get("relative_l1") is not None:
            kwargs["relative_l1"] = summary["relative_l1"]
        elif params.get("l1") is not None:
            kwargs["l1"] = params["l1"]
    learn(store, summary["layer"], method=method, n_concepts=n_concepts or cs.dictionary.components_.shape[0],
          out=out, seed=seed, device=device, token=cs.token, **kwargs)
    ground(out, model=adapter, settings=GroundingSettings.from_json(cs.grounding))
    return load_concepts(out, require_grounding=True)


def evaluate(concepts, test_features, out, *, settings: EvaluationSettings | None = None, model=None,
             overwrite: bool = False, **fields) -> dict:
    """Evaluate a concepts folder on a test feature store; writes ``out`` and returns the metrics.

    Parameters
    ----------
    concepts : a grounded concepts folder (``mmconcepts learn``).
    test_features : the test store (same model and token).
    out : the evaluation folder to write (new or empty, unless ``overwrite``).
    settings : :class:`EvaluationSettings`, or its fields as keywords (``methods=``, ``clip_model=``, ...).
    model : a loaded adapter, :class:`~mmconcepts.models.ModelOptions` or an id; every option left unset
        follows the training store's run record. Grounding reads the unembedding and final norm only; the
        Noise-Imgs baseline runs the whole model. The dictionaries and scorers run on its ``device``.

    Returns
    -------
    dict : the content of ``metrics.json`` (:class:`~mmconcepts.evaluation.results.EvaluationResult`).
    """
    if settings is None:
        settings = EvaluationSettings(**fields)
    elif fields:
        raise MMConceptsError("give the evaluation settings either as settings= or as keywords, not both")
    out = Path(out)
    check_writable_target(out, overwrite, inputs=[concepts, test_features])
    with FolderLock(out):  # one writer of out from the start; OutputFolder swaps the finished folder in
        return _evaluate_into(concepts, test_features, out, settings, model, overwrite)


def _evaluate_into(concepts, test_features, out: Path, settings: EvaluationSettings, model, overwrite: bool) -> dict:
    """The body of :func:`evaluate` once ``out`` is locked."""
    from mmconcepts.extract.features import load_features
    from mmconcepts.extract.store import read_manifest, store_tokens
    from mmconcepts.concepts.concept_set import load_concepts, model_for
    from mmconcepts.models import ModelAdapter
    from mmconcepts.models.options import as_options

    cs = load_concepts(concepts, require_grounding=True)
    layer, token, main = str(cs.summary["layer"]), cs.summary["token"], cs.summary["method"]
    test_manifest, train_manifest = read_manifest(test_features), cs.manifest
    if test_manifest.get("model") != train_manifest.get("model"):
        raise MMConceptsError(f"the test features come from model {test_manifest.get('model')!r} but the concepts "
                              f"from {train_manifest.get('model')!r}; extract the test features with the same model")
    if token not in store_tokens(test_manifest):
        raise MMConceptsError(f"the test features are for token {', '.join(map(repr, store_tokens(test_manifest)))}, "
                              f"the concepts for {token!r}; extract test features for the same token")
    Z_test, test_meta = load_features(test_features, layer, token)
    if Z_test.shape[0] == 0:
        raise MMConceptsError(f"no test samples in {test_features}")
    from mmconcepts.evaluation.grounding.scoring import TestSet

    test = TestSet(test_meta)
    device = str(model.device) if isinstance(model, ModelAdapter) else as_options(model).device
    scorers = _scorers(settings, device)
    needs_model = any(m != main for m in settings.methods) or {"noise-imgs", "rnd-words"} & set(settings.baselines) \
        or settings.causal or settings.extended or bool(settings.heatmaps)
    whole = "noise-imgs" in settings.baselines or settings.causal or bool(settings.heatmaps)
    adapter = model_for(cs, model, head=not whole) if needs_model else None

    with OutputFolder(out, overwrite=overwrite, inputs=[concepts, test_features]) as tmp:
        result, folders, causal = _evaluate(cs, test, Z_test, settings, scorers, adapter, device, tmp)
        result.concepts, result.concepts_absolute = link(cs.path, out), str(cs.path.resolve())
        result.test_features, result.test_features_absolute = link(test_features, out), \
            str(Path(test_features).resolve())
        if settings.heatmaps:
            from mmconcepts.evaluation.attribution.map_scores import write_heatmaps

            result.heatmaps = write_heatmaps(tmp, out, cs, test.meta, cs.encode(Z_test), adapter, settings)
        _write(tmp, result, folders, cs, cs.encode(Z_test), test, out, causal)
    return result.to_json()


def _evaluate(cs, test, Z_test, settings, scorers, adapter, device, tmp):
    """``(result, {method: ConceptSet})``: every folder made in ``tmp``, every row scored."""
    from mmconcepts.evaluation.grounding.scoring import gt_captions_scores, score
    from mmconcepts.concepts.ground import grounder_for

    summary, main = cs.summary, cs.summary["method"]
    train_meta = cs.train_meta()
    folders = {main: cs}
    for method in settings.methods:
        if method not in folders:
            folders[method] = _same_run(cs, method, cs.features, tmp / "concepts" / method, adapter,
                                        settings.seed, device)
    common = dict(train_meta=train_meta, token=cs.summary["token"])
    methods = {m: score(folders[m].word_sets(), folders[m].encode(Z_test), test, scorers,
                        train_activations=folders[m].activations, **common) for m in settings.methods}
    if settings.extended:
        _extended(folders, Z_test, test, settings, adapter, methods)
    baselines = {}
    main_test = cs.encode(Z_test)
    if "rnd-words" in settings.baselines:
        from mmconcepts.concepts.vocabulary import random_words

        pool = grounder_for(cs, adapter).pool()
        rng = random.Random(settings.seed)
        words = [random_words(pool, len(w), rng) for w in cs.word_sets()]
        baselines["rnd-words"] = score(words, main_test, test, scorers)
    if "noise-imgs" in settings.baselines:
        baselines["noise-imgs"] = _noise_imgs(cs, train_meta, Z_test, test, settings, scorers, adapter, device,
                                              tmp / "baselines" / "noise-imgs")
    if "gt-captions" in settings.baselines:
        baselines["gt-captions"] = gt_captions_scores(test, scorers)
    causal = _causal(folders, main, test, settings, adapter, methods, baselines) if settings.causal else None
    manifest = cs.manifest
    result = EvaluationResult(token=summary["token"], layer=str(summary["layer"]), n_test=len(test.meta),
                              n_train=len(train_meta), n_concepts=cs.n_concepts, model=manifest.get("model"),
                              main_method=main, settings=asdict(settings), methods=methods, baselines=baselines)
    return result, {m: folders[m] for m in settings.methods}, causal


def _causal(folders, main, test, settings, adapter, methods, baselines) -> None:
    """The causal metrics into the rows: every method's own directions, and for the main method the
    centred-direction, random-direction and diffmean controls (:mod:`mmconcepts.evaluation.causal.interventions`). Returns what
    ``causal.json`` keeps: ``{method: {direction: scores}}`` (per-concept rows and caption pairs)."""
    from mmconcepts.evaluation.causal.interventions import causal_evaluation, metrics_row

    detail = {}
    steered = settings.methods if settings.causal_methods is None else settings.causal_methods
    for method in dict.fromkeys([main, *steered]):
        own = method in steered
        directions = (("concept",) if own else ()) + (CONTROLS if method == main else ())
        scores = causal_evaluation(folders[method], test.meta, adapter, directions=directions, seed=settings.seed,
                                   n_images=settings.causal_images)
        if own:
            methods[method] = {**methods[method], **metrics_row(scores["concept"])}
        if method == main:
            for direction in CONTROLS:
                baselines[CONTROL_ROWS[direction]] = metrics_row(scores[direction])
        detail[method] = scores
    return detail


def _extended(folders, Z_test, test, settings, adapter, methods) -> None:
    """The extended metrics into every method's row (:mod:`mmconcepts.evaluation.extended.collect`); the training
    features are read once, every method being learnt on the same store."""
    from mmconcepts.evaluation.extended.collect import extended_metrics
    from mmconcepts.extract.features import load_features

    main = next(iter(folders.values()))
    Z_train = load_features(main.features, main.summary["layer"], main.token)[0]
    for method in settings.methods:
        methods[method] = {**methods[method], **extended_metrics(folders[method], Z_test, test.meta, model=adapter,
                                                                 Z_train=Z_train, seed=settings.seed)}


def _noise_imgs(cs, train_meta, Z_test, test, settings, scorers, adapter, device, folder: Path) -> dict:
    """Noise images read with the training captions -> a store -> the main method -> its scores."""
    from mmconcepts.data.noise import noise_dataset
    from mmconcepts.evaluation.grounding.scoring import score
    from mmconcepts.extract.extraction import ExtractionSettings, extract, store_reading

    reading = store_reading(cs.manifest, cs.token)
    n = settings.n_noise or min(len(train_meta), 512)
    data = noise_dataset(cs.features, train_meta, n, settings.seed)
    extraction = ExtractionSettings(token=reading["token"], also=reading["also"], layers=(cs.summary["layer"],),
                                    mode="teacher", instruction=reading["instruction"], batch_size=32,
                                    dtype="float32")
    try:
        manifest = extract(data, out=folder / "features", model=adapter, settings=extraction, progress=False)
    except MMConceptsError as exc:
        raise MMConceptsError(f"no noise-image representation could be read ({exc}); drop the noise-imgs "
                              "baseline") from None
    K = cs.dictionary.components_.shape[0]
    noise = _same_run(cs, cs.summary["method"], folder / "features", folder / "concepts", adapter, settings.seed,
                      device, n_concepts=min(K, manifest["n_samples"]))
    return score(noise.word_sets(), noise.encode(Z_test), test, scorers)


def _write(tmp: Path, result: EvaluationResult, folders: dict, main, main_test, test, out: Path,
           causal: dict | None = None) -> None:
    """metrics.json, metrics.md, overlap.json, explanations.json and (``--causal``) causal.json into ``tmp``
    (to become ``out``); paths are stored relative to ``out``."""
    from mmconcepts.evaluation.grounding import ground_truth as M
    from mmconcepts.concepts.explain import top_concepts

    overlaps = {m: M.overlap_matrix([set(w) for w in f.word_sets()]) for m, f in folders.items()}
    explanations = []
    for i, m in enumerate(test.meta[:result.settings.get("n_explanations", 8)]):
        tops = [{**c, "images": [link(im, out) for im in c["images"]]} for c in top_concepts(main_test[i], main, 3)]
        explanations.append({"id": m["id"], "image": link(m["image"], out), "caption": m["caption"],
                             "references": m.get("references", []), "concepts": tops})
    write_json(tmp / "metrics.json", result.to_json(), indent=2)
    (tmp / "metrics.md").write_text(result.markdown(), encoding="utf-8")
    write_json(tmp / "overlap.json", {"methods": overlaps}, indent=None)
    write_json(tmp / "explanations.json", {"explanations": explanations})
    if causal is not None:
        for scores in (s for by_direction in causal.values() for s in by_direction.values()):
            for example in scores["examples"]:
                example["image"] = link(example["image"], out)
        write_json(tmp / "causal.json", {"methods": causal}, indent=1)
