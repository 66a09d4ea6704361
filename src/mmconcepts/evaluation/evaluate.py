"""``mmconcepts evaluate``: how grounded and how disentangled are the concepts, next to baselines.

Given a grounded concepts folder (learnt on a training store) and a test store (same model, same token),
:func:`evaluate` reads and checks them once into an :class:`EvaluationRun`, and :func:`run_evaluation` runs
each step on it, each returning what it computed:

- the compared sets of concepts (:func:`~mmconcepts.evaluation.comparisons.comparison_folders`): every other
  method is an ordinary concepts folder ``concepts/<method>/``, made by the same
  :func:`~mmconcepts.decompose.learn` and :func:`~mmconcepts.concepts.ground` calls as the main one, with the
  same defaults, number of concepts, seed, device and grounding settings;
- each method's grounding row, the pure :func:`~mmconcepts.evaluation.grounding.scoring.score` on the test
  samples, and with ``extended`` its extended metrics (:mod:`mmconcepts.evaluation.extended`);
- the baselines' rows (:func:`~mmconcepts.evaluation.comparisons.baseline_rows`): **rnd-words**,
  **noise-imgs** (``baselines/noise-imgs/``: a store of uniform-noise images read with the training captions,
  :mod:`mmconcepts.data.noise`, and the main method learnt on it) and **gt-captions**;
- with ``causal``, the causal evaluation (:mod:`mmconcepts.evaluation.causal`), with ``fidelity`` every
  method's reconstruction spliced into the model (:mod:`mmconcepts.evaluation.fidelity`), with ``autointerp``
  every method's concepts named from their top images (:mod:`mmconcepts.evaluation.autointerp`) and with
  ``heatmaps`` the concept maps' (:mod:`mmconcepts.evaluation.attribution`).

Output (:mod:`mmconcepts.evaluation.folder`, :mod:`mmconcepts.evaluation.results`): ``metrics.json``,
``metrics.md``, ``overlap.json``, ``explanations.json`` (and ``causal.json``, ``maps.json``, ``autointerp.json``)
and those folders,
written to a temp folder and moved into place at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.folder import EvaluationOutputs, explanations, write_folder
from mmconcepts.evaluation.results import EvaluationResult
from mmconcepts.evaluation.settings import EvaluationSettings
from mmconcepts.files import link
from mmconcepts.outputs import FolderLock, OutputFolder, check_writable_target
from mmconcepts.params import settings_from

if TYPE_CHECKING:
    import torch

    from mmconcepts.concepts.concept_set import ConceptSet
    from mmconcepts.evaluation.attribution.heatmaps import HeatmapScores, ReportMaps
    from mmconcepts.evaluation.autointerp.scores import AutointerpResult
    from mmconcepts.evaluation.causal.scores import CausalResult
    from mmconcepts.evaluation.extended.collect import ExtendedRow
    from mmconcepts.evaluation.fidelity.scores import FidelityResult
    from mmconcepts.evaluation.grounding.scoring import Scorers, TestSet
    from mmconcepts.models import ModelAdapter

__all__ = ["CONTROLS", "CONTROL_ROWS", "EvaluationRun", "EvaluationSettings", "evaluate", "run_evaluation"]

#: The causal evaluation's controls for the main method, and their rows under ``baselines`` in metrics.json:
#: the concept's direction less the mean state (``centred``), a random direction, and the mean difference.
CONTROLS = ("centred", "random", "diffmean")
CONTROL_ROWS = {"centred": "centred-direction", "random": "random-direction", "diffmean": "diffmean"}


@dataclass(frozen=True)
class EvaluationRun:
    """One evaluation's inputs, read and checked once: what every step of :func:`run_evaluation` reads.

    Parameters
    ----------
    concepts : the main concepts folder, read back.
    test_features : the test store's path.
    test : the test samples; ``Z_test`` their features at the concepts' layer and token.
    settings : what the evaluation compares and how it scores.
    scorers : the loaded CLIP and BERTScore scorers (either may be absent).
    adapter : the loaded model (its head only when no step runs the whole model); ``None`` when no step needs it.
    device : where the dictionaries and scorers run.
    tmp : the folder being written, which becomes ``out`` when complete.
    out : the evaluation folder (paths in the files are relative to it).
    """

    concepts: ConceptSet
    test_features: Path
    test: TestSet
    Z_test: torch.Tensor
    settings: EvaluationSettings
    scorers: Scorers
    adapter: ModelAdapter | None
    device: str
    tmp: Path
    out: Path

    @property
    def main(self) -> str:
        """The main concepts' method."""
        return self.concepts.summary["method"]

    @cached_property
    def train_meta(self) -> list[dict]:
        """The metadata rows of the training samples (read once)."""
        return self.concepts.train_meta()

    @cached_property
    def main_test(self):
        """The main concepts' activations of the test samples (encoded once)."""
        return self.concepts.encode(self.Z_test)

    @cached_property
    def test_images(self) -> TestSet:
        """The test images: :attr:`test` itself, or for image-token rows one sample per image
        (:mod:`mmconcepts.concepts.pooling`)."""
        from mmconcepts.concepts.pooling import image_groups, image_meta, is_image_rows
        from mmconcepts.evaluation.grounding.scoring import TestSet

        if not is_image_rows(self.test.meta):
            return self.test
        return TestSet(image_meta(self.test.meta, image_groups(self.test.meta)))


def evaluate(concepts, test_features, out, *, settings: EvaluationSettings | None = None, model=None,
             overwrite: bool = False, caption_accuracy: Mapping | None = None, **fields) -> dict:
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
    overwrite : replace a non-empty ``out``.
    caption_accuracy : how well the model captions the test images, measured by the caller (ShapesWorld:
        :func:`~mmconcepts.data.truth.caption_accuracy` of the test store's captions); written into
        ``metrics.json`` as it is given.

    Returns
    -------
    dict : the content of ``metrics.json`` (:class:`~mmconcepts.evaluation.results.EvaluationResult`).
    """
    settings = settings_from(EvaluationSettings, settings, fields, "evaluation")
    out = Path(out)
    check_writable_target(out, overwrite, inputs=[concepts, test_features])
    with FolderLock(out):  # one writer of out from the start; OutputFolder swaps the finished folder in
        run = _read_run(concepts, test_features, settings, model, out)
        with OutputFolder(out, overwrite=overwrite, inputs=[concepts, test_features]) as tmp:
            outputs = run_evaluation(replace(run, tmp=tmp), caption_accuracy=caption_accuracy)
            write_folder(tmp, out, outputs)
    return outputs.result.to_json()


def _read_run(concepts, test_features, settings: EvaluationSettings, model, out: Path) -> EvaluationRun:
    """Read the concepts and the test store, check that they agree, load what the steps need (the run's
    ``tmp`` is ``out`` until the folder being written is opened)."""
    from mmconcepts.concepts.concept_set import load_concepts, model_for
    from mmconcepts.evaluation.grounding.scoring import Scorers, TestSet
    from mmconcepts.extract.features import load_features
    from mmconcepts.extract.store import read_manifest, store_tokens
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
    device = str(model.device) if isinstance(model, ModelAdapter) else as_options(model).device
    scorers = Scorers.load(settings.clip_model, settings.bert_model, settings.bert_layers, device=device)
    needs_model = any(m != main for m in settings.methods) or {"noise-imgs", "rnd-words"} & set(settings.baselines) \
        or settings.causal or settings.extended or bool(settings.heatmaps) or settings.fidelity or settings.autointerp
    # concepts read by their captions are grounded again (other methods, extended metrics) through the whole model
    captioned = (cs.grounding or {}).get("decode") == "caption"
    whole = "noise-imgs" in settings.baselines or settings.causal or bool(settings.heatmaps) or settings.fidelity \
        or (settings.autointerp and settings.namer is None) \
        or (captioned and (any(m != main for m in settings.methods) or settings.extended))
    adapter = model_for(cs, model, head=not whole) if needs_model else None
    return EvaluationRun(cs, Path(test_features), TestSet(test_meta), Z_test, settings, scorers, adapter, device,
                         tmp=out, out=out)


def run_evaluation(run: EvaluationRun, *, caption_accuracy: Mapping | None = None) -> EvaluationOutputs:
    """Every step of the evaluation on ``run``, in order; returns what is to be written (nothing is written
    but the compared concepts folders, into ``run.tmp``)."""
    from mmconcepts.concepts.pooling import n_images
    from mmconcepts.evaluation.comparisons import (baseline_rows, comparison_folders, grounding_row, patch_row,
                                                   random_direction_row)

    settings = run.settings
    folders = comparison_folders(run)
    grounding = {m: grounding_row(run, folders[m]) for m in settings.methods}
    patches = {m: patch_row(run, folders[m]) or {} for m in settings.methods}
    random_patches = random_direction_row(run)
    extended = _extended(run, folders) if settings.extended else {}
    baselines = baseline_rows(run)
    causal = _causal(run, folders) if settings.causal else None
    heatmaps, maps = _heatmaps(run) if settings.heatmaps else (None, None)
    fidelity = _fidelity(run, folders) if settings.fidelity else None
    autointerp = _autointerp(run, folders) if settings.autointerp else None
    named = autointerp.rows() if autointerp is not None else {}
    steered = causal.rows("concept") if causal is not None else {}
    controls = {CONTROL_ROWS[d]: causal.methods[run.main][d].row for d in CONTROLS} if causal is not None else {}
    if random_patches is not None:  # the random directions' patch metrics beside their causal control, one row
        controls["random-direction"] = {**random_patches, **controls.get("random-direction", {})}
    summary, cs = run.concepts.summary, run.concepts
    result = EvaluationResult(
        token=summary["token"], layer=str(summary["layer"]), n_test=len(run.test_images.meta),
        n_train=n_images(run.train_meta),
        n_concepts=cs.n_concepts, model=cs.manifest.get("model"), main_method=run.main, settings=asdict(settings),
        methods={m: {**grounding[m], **patches[m], **extended.get(m, {}), **steered.get(m, {}), **named.get(m, {})}
                 for m in settings.methods},
        baselines={**baselines, **controls}, concepts=link(cs.path, run.out),
        concepts_absolute=str(cs.path.resolve()), test_features=link(run.test_features, run.out),
        test_features_absolute=str(run.test_features.resolve()),
        caption_accuracy=dict(caption_accuracy) if caption_accuracy is not None else None,
        heatmaps=heatmaps.to_json() if heatmaps is not None else None,
        fidelity=fidelity.to_json() if fidelity is not None else None)
    shown = explanations(cs, run.main_test, run.test.meta, settings.n_explanations, run.out)
    return EvaluationOutputs(result, folders, shown, causal=causal, maps=maps, autointerp=autointerp)


def _extended(run: EvaluationRun, folders: dict) -> dict[str, ExtendedRow]:
    """The extended metrics of every method (:mod:`mmconcepts.evaluation.extended.collect`); the training
    features are read once, every method being learnt on the same store."""
    from mmconcepts.evaluation.extended.collect import extended_metrics
    from mmconcepts.extract.features import load_features

    main = run.concepts
    Z_train = load_features(main.features, main.summary["layer"], main.token)[0]
    return {m: extended_metrics(folders[m], run.Z_test, run.test.meta, model=run.adapter, Z_train=Z_train,
                                seed=run.settings.seed) for m in run.settings.methods}


def _causal(run: EvaluationRun, folders: dict) -> CausalResult:
    """The causal evaluation (:mod:`mmconcepts.evaluation.causal.interventions`) of every steered method's own
    directions, and for the main method the centred-direction, random-direction and diffmean controls."""
    from mmconcepts.evaluation.causal import interventions
    from mmconcepts.evaluation.causal.scores import CausalResult

    settings = run.settings
    steered = settings.methods if settings.causal_methods is None else settings.causal_methods
    detail = {}
    for method in dict.fromkeys([run.main, *steered]):
        directions = (("concept",) if method in steered else ()) + (CONTROLS if method == run.main else ())
        detail[method] = interventions.causal_evaluation(folders[method], run.test.meta, run.adapter,
                                                         directions=directions, seed=settings.seed,
                                                         n_images=settings.causal_images,
                                                         ablate_where=settings.causal_ablate_where)
    return CausalResult(detail)


def _fidelity(run: EvaluationRun, folders: dict) -> FidelityResult:
    """The main and every compared method's reconstruction spliced into the model
    (:mod:`mmconcepts.evaluation.fidelity.splice`), on the same test images."""
    from mmconcepts.evaluation.fidelity.settings import FidelitySettings
    from mmconcepts.evaluation.fidelity.splice import fidelity_evaluation

    settings = FidelitySettings(n_images=run.settings.fidelity_images, seed=run.settings.seed)
    spliced = {run.main: run.concepts, **{m: folders[m] for m in run.settings.methods}}
    return fidelity_evaluation(spliced, run.test.meta, run.Z_test, run.adapter, settings)


def _autointerp(run: EvaluationRun, folders: dict) -> AutointerpResult:
    """Every compared method's concepts named from their top images and scored
    (:mod:`mmconcepts.evaluation.autointerp.naming`); the namer is the studied model unless ``namer`` names
    another, loaded on the run's device."""
    from mmconcepts.evaluation.autointerp.naming import autointerp_evaluation
    from mmconcepts.evaluation.autointerp.settings import AutointerpSettings

    settings = run.settings
    namer = run.adapter
    if settings.namer is not None:
        from mmconcepts.models import load_model

        namer = load_model(settings.namer, device=run.device)
    return autointerp_evaluation({m: folders[m] for m in settings.methods}, run.Z_test, run.test.meta, namer,
                                 AutointerpSettings(namer=settings.namer, seed=settings.seed),
                                 namer_id=settings.namer)


def _heatmaps(run: EvaluationRun) -> tuple[HeatmapScores, ReportMaps]:
    """The concept maps' scores and the report's maps (:mod:`mmconcepts.evaluation.attribution.heatmaps`)."""
    from mmconcepts.evaluation.attribution.heatmaps import HeatmapSettings, concept_map_evaluation

    settings = HeatmapSettings(run.settings.heatmaps, n_explanations=run.settings.n_explanations)
    return concept_map_evaluation(run.concepts, run.test.meta, run.main_test, run.adapter, settings, run.out)
