"""What an evaluation compares the concepts with: the other methods' concepts and the baselines' rows.

Every set of concepts compared is an ordinary concepts folder, made by the same
:func:`~mmconcepts.decompose.learn` and :func:`~mmconcepts.concepts.ground` calls as the main one
(:func:`same_run`): :func:`comparison_folders` learns each comparison method on the training store, and the
Noise-Imgs baseline learns the main method on a store of noise images (:func:`noise_imgs_row`).
:func:`baseline_rows` scores the baselines: **rnd-words** (each main concept's words replaced by as many random
words of the same pool), **noise-imgs** and **gt-captions** (the reference captions in place of the words).
Each step reads the evaluation's :class:`~mmconcepts.evaluation.evaluate.EvaluationRun` and returns what it made.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.grounding.patches import (PatchScores, has_patch_truth, patch_scores,
                                                     random_direction_scores)
from mmconcepts.evaluation.grounding.scoring import GroundingRow, gt_captions_scores, score

if TYPE_CHECKING:
    from mmconcepts.concepts.concept_set import ConceptSet
    from mmconcepts.evaluation.evaluate import EvaluationRun

__all__ = ["baseline_rows", "comparison_folders", "grounding_row", "noise_imgs_row", "patch_row", "random_direction_row",
           "same_run"]


def same_run(run: EvaluationRun, method: str, store, out: Path, n_concepts: int | None = None,
             load_image=None) -> ConceptSet:
    """Learn ``method`` on ``store`` into ``out`` as the main folder was learnt (its K, device and, for the main
    method itself, its parameters and sparsity rule), ground it with the main folder's grounding settings
    (``load_image``: :func:`~mmconcepts.concepts.ground.ground`'s), and return the new
    :class:`~mmconcepts.concepts.concept_set.ConceptSet`."""
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.concepts.ground import ground
    from mmconcepts.concepts.settings import GroundingSettings
    from mmconcepts.decompose import learn

    cs = run.concepts
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
          out=out, seed=run.settings.seed, device=run.device, token=cs.token, pool=cs.pool, **kwargs)
    ground(out, model=run.adapter, settings=GroundingSettings.from_json(cs.grounding), load_image=load_image)
    return load_concepts(out, require_grounding=True)


def comparison_folders(run: EvaluationRun) -> dict[str, ConceptSet]:
    """``{method: concepts}`` for every compared method, in the settings' order: the main folder itself, the
    others learnt on its training store into ``concepts/<method>/`` of the folder being written."""
    folders = {run.main: run.concepts}
    for method in run.settings.methods:
        if method not in folders:
            folders[method] = same_run(run, method, run.concepts.features, run.tmp / "concepts" / method)
    return {m: folders[m] for m in run.settings.methods}


def grounding_row(run: EvaluationRun, concepts: ConceptSet) -> GroundingRow:
    """The grounding row of a compared set of concepts (coverage and purity from its training activations);
    image-token concepts are scored per image, on their patches' activations pooled as the folder says
    (:func:`~mmconcepts.concepts.pooling.per_image`)."""
    from mmconcepts.concepts.pooling import per_image

    test_activations, _ = per_image(concepts.encode(run.Z_test), run.test.meta, concepts.pool)
    train_activations, train_meta = per_image(concepts.activations, run.train_meta, concepts.pool)
    return score(concepts.word_sets(), test_activations, run.test_images, run.scorers,
                 train_activations=train_activations, train_meta=train_meta, token=run.concepts.token)


def patch_row(run: EvaluationRun, concepts: ConceptSet) -> PatchScores | None:
    """The patch metrics of a compared set of image-token concepts on ShapesWorld
    (:mod:`mmconcepts.evaluation.grounding.patches`); ``None`` where they do not apply."""
    if not (has_patch_truth(run.test.meta) and has_patch_truth(run.train_meta)):
        return None
    return patch_scores(concepts.activations, run.train_meta, concepts.encode(run.Z_test), run.test.meta,
                        pool=concepts.pool)


def random_direction_row(run: EvaluationRun) -> PatchScores | None:
    """The patch metrics of random directions (as many as the main concepts), or ``None`` where they do not
    apply; the training store is read shard by shard."""
    from mmconcepts.extract.features import iter_feature_shards

    if not (has_patch_truth(run.test.meta) and has_patch_truth(run.train_meta)):
        return None
    cs = run.concepts
    shards = lambda: iter_feature_shards(cs.features, cs.summary["layer"], cs.token)  # noqa: E731 - read twice
    return random_direction_scores(shards, run.train_meta, run.Z_test, run.test.meta, cs.n_concepts,
                                   seed=run.settings.seed, pool=cs.pool)


def _rnd_words_row(run: EvaluationRun) -> GroundingRow:
    from mmconcepts.concepts.ground import grounder_for
    from mmconcepts.concepts.pooling import per_image
    from mmconcepts.concepts.vocabulary import random_words

    pool = grounder_for(run.concepts, run.adapter).pool()
    rng = random.Random(run.settings.seed)
    words = [random_words(pool, len(w), rng) for w in run.concepts.word_sets()]
    return score(words, per_image(run.main_test, run.test.meta, run.concepts.pool)[0], run.test_images, run.scorers)


def noise_imgs_row(run: EvaluationRun) -> GroundingRow:
    """Noise images read with the training captions -> a store -> the main method -> its scores (the store and
    the concepts in ``baselines/noise-imgs/`` of the folder being written)."""
    from mmconcepts.concepts.pooling import per_image
    from mmconcepts.data.noise import noise_dataset
    from mmconcepts.extract.extraction import ExtractionSettings, extract, store_reading

    cs, folder = run.concepts, run.tmp / "baselines" / "noise-imgs"
    reading = store_reading(cs.manifest, cs.token)
    train_images = per_image(cs.activations, run.train_meta)[1]
    n = run.settings.n_noise or min(len(train_images), 512)
    data = noise_dataset(cs.features, train_images, n, run.settings.seed)
    extraction = ExtractionSettings(token=reading["token"], also=reading["also"], layers=(cs.summary["layer"],),
                                    mode="teacher", instruction=reading["instruction"], batch_size=32,
                                    dtype="float32", positions=cs.manifest.get("positions", "token"))
    try:
        manifest = extract(data, out=folder / "features", model=run.adapter, settings=extraction, progress=False)
    except MMConceptsError as exc:
        raise MMConceptsError(f"no noise-image representation could be read ({exc}); drop the noise-imgs "
                              "baseline") from None
    K = cs.dictionary.components_.shape[0]
    samples = {s.id: s for s in data.samples}  # the noise is drawn in memory, never written: read by id
    noise = same_run(run, run.main, folder / "features", folder / "concepts", n_concepts=min(K, manifest["n_samples"]),
                     load_image=lambda entry: samples[entry["id"]].load())
    return score(noise.word_sets(), per_image(noise.encode(run.Z_test), run.test.meta, noise.pool)[0],
                 run.test_images, run.scorers)


def baseline_rows(run: EvaluationRun) -> dict[str, GroundingRow]:
    """The rows of the baselines the settings ask for, in the order ``rnd-words``, ``noise-imgs``,
    ``gt-captions``."""
    rows = {}
    if "rnd-words" in run.settings.baselines:
        rows["rnd-words"] = _rnd_words_row(run)
    if "noise-imgs" in run.settings.baselines:
        rows["noise-imgs"] = noise_imgs_row(run)
    if "gt-captions" in run.settings.baselines:
        rows["gt-captions"] = gt_captions_scores(run.test_images, run.scorers)
    return rows
