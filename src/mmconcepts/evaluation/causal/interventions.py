"""Concepts the model actually uses: steer the captioner with a concept, or ablate it, and read the captions.

Grounding says what a concept *means* (its words, its images); this module asks whether the model *uses* it:
add the concept's direction while the model captions a test image (steering), or remove the concept's
contribution (ablation, :class:`~mmconcepts.interventions.steering.Steering`), and parse the caption before and
after with the ShapesWorld grammar (:func:`~mmconcepts.data.shapesworld.parse_caption`).

Metrics (on ShapesWorld, whose test rows carry ``attributes``)
--------------------------------------------------------------
A concept is evaluated when its first grounded word names an object attribute value other than a shape
(:func:`~mmconcepts.data.truth.attribute_vocabulary`: ``"red"`` -> ``(colour, red)``, ``"big"`` ->
``(size, large)``, ``"left"`` -> ``(position, left)``). Shape words are skipped: the object the
intervention is read on is the *token object*, the first object whose shape is the token of interest, so a
shape is what defines it, not something it can gain. Per concept:

``steering_success``
    over the test images whose token object (ground truth) lacks the value, the share whose steered caption
    says the value of the token object (the first parsed object of that shape);
``ablation_success``
    over the images whose token object has the value, the share whose ablated caption no longer says it of
    the token object (the token object missing or with another / no value of that attribute);
``specificity``
    over the successful interventions (both kinds), the share of the *other* attributes left as the
    caption before said them: the token object's other attributes (shape excluded) and all four
    attributes of every other object (matched in reading order; an object missing on either side counts
    as four changed attributes);
``fluency``
    the share of steered captions that still parse: :func:`parse_caption` finds at least one object and
    every object phrase names a shape.

Each is averaged over the concepts that have at least one image of the kind (``n_concepts`` says how many
were evaluated). The controls: ``direction="random"`` (a random direction of the same norm, read against the
concept's target value: it should almost never say it) and ``direction="diffmean"`` (the AxBench baseline:
difference of the means of the concept's most activating training states and the rest). Ablation applies to
the concept's own term only, so the controls have no ``ablation_success``.

On data without ground truth, ``steering_success`` is the share of images whose caption before holds none
of the concept's top words (:data:`N_WORDS`) and after holds one, ``ablation_success`` the share of images
whose caption before holds one and after none; ``fluency`` and ``specificity`` are absent.

A concepts folder learnt on image tokens (``extract --positions image``) is ablated and steered in the prompt's
image tokens instead, scored the same way: :mod:`mmconcepts.evaluation.causal.image_tokens`.

Defaults, and why
-----------------
Calibrated on the demo (``mmconcepts demo``, seed 0: the shipped captioner, token "circle", Semi-NMF K=20 at
layer ``"norm"``; 60 test images, all 20 concepts (every first word names an attribute value); ``benchmarks/
causal.py`` prints the full table):

- **layer: the dictionary's own** (:data:`DEFAULT_LAYER` ``None``, here ``"norm"``). The final norm feeds
  the unembedding alone, so adding ``s u`` there adds ``s W u`` to the logits of the steered positions and
  nothing else. Adding the same (norm-space) direction at a decoder layer instead did no better: layer 3,
  "token", factor 64 / 256: 0.33 / 0.56 on 6 concepts; layers 0-3 with "after"/"all" at 32-128: at most 0.40
  with fluency <= 0.66. Ablation needs the dictionary's layer anyway.
- **positions "token"** (:data:`DEFAULT_POSITIONS`): only the step at which the token of interest is
  predicted, the very state the dictionary was learnt on. There the model, instead of "circle", says the
  concept's word, which the grammar allows before the noun ("one *red* circle ..."), then goes on with the
  noun and (mostly) leaves that attribute out later. "after" adds the logit bias to every later step: at
  factor 1 / 2 / 4 steering success 0.00 / 0.07 / 0.26 with fluency 1.00 / 0.96 / 0.73 ("... little
  square little square large square ..."). "all" is "after" from step 0 at this layer.
- **strength factor 16** (:data:`DEFAULT_STRENGTH_FACTOR`, times the concept's typical contribution): at
  "token", factors 8 / 16 / 32 give steering 0.33 / 0.58 / 0.68, specificity 0.99 / 0.86 / 0.84, fluency
  1.00 / 0.95 / 0.94, the random direction 0.00 / 0.00 / 0.01 (its fluency 1.00 / 0.95 / 0.89). 16 is the
  largest factor at which fluency stays at 0.95; beyond it success grows slowly and the random control starts
  to break captions. :data:`~mmconcepts.interventions.directions.STRENGTH_FACTOR` is set to it.

What limits the scores (same setting)
-------------------------------------
- *Steering, Semi-NMF below diffmean (0.58 vs 0.88 at 16).* A non-negative dictionary's directions all carry
  the mean state, which predicts the token itself: through the unembedding ``W u_k`` raises "circle" about as
  much as the concept's word for every concept (0.22-0.34 vs 0.26-0.69), and for 5 of the 20 (one of each of
  "right", "large", "orange", "purple" and "red") "circle" is as high as the word or within 0.01 of it, so
  no strength makes the model say the word instead of "circle". ``direction="centred"`` (the direction less its
  component along the mean training state) lifts Semi-NMF to 0.67 / 0.80 / 0.86 at factors 4 / 8 / 16,
  close to diffmean (0.88; it subtracts the mean by construction). K-Means and Simple concepts are points,
  mostly the mean: their own directions steer nothing (0.00), centred ones 0.51 / 0.47.
- *Specificity ~0.86.* Position words said before the noun ("one *top* circle") make the model describe a
  second object afterwards ("one top circle in red ..., and one circle on the right ..."): the steered
  caption gains an object. The two "top" concepts stop at 0.4 success and 0.4 / 0.55 fluency (they bring
  the whole mean down to 0.95): "top" often opens a phrase that never gets its noun ("... and one top and
  one square on the left ...").
- *Ablation ~0 (0.004).* At ``"norm"`` the concept lives in the logits of one step, the step predicting
  "circle". Removing ``v_k u_k`` there does change the caption, but only its word order: it removes the
  shared "circle" component too, so another attribute word wins that step ("one circle on the left of
  little size in red" -> "one red circle of little size on the left"), and the ablated attribute is said
  later anyway: the later steps read it from the image through attention, from states the dictionary was
  not learnt on (ablating at every step, "after", gives 0.02). A dictionary learnt at a decoder layer does not
  bite either: Semi-NMF K=20 learnt on the same samples' states at layer 1 / 2 and ablated there (30 images;
  5 / 11 concepts name an attribute value) gives ablation success 0.00 / 0.006 at "token", 0.00 / 0.023 at
  "after", 0.00 / 0.034 at "all" (the prompt's image tokens included). The token-step concept is not where
  the model keeps the attribute: each later step reads it again from the image tokens, whose states the
  concept (learnt on the token's own state) does not describe. Steering at layer 1 "token" works on the
  size concepts (0.76, specificity 0.94, fluency 1.00); at layer 2 it does not (0.09; centred 0.20).
"""

from __future__ import annotations

import random

from mmconcepts.errors import MMConceptsError
from mmconcepts.data.truth import concept_target, token_object
from mmconcepts.evaluation.causal.scores import (METRICS, CausalRow, CausalScores, concept_scores, format_table,
                                                  has_words, is_fluent, metrics_row, specificity, steered_has,
                                                  word_scores)
from mmconcepts.evaluation.rows import mean
from mmconcepts.evaluation.causal.settings import (DEFAULT_LAYER, DEFAULT_N_IMAGES, DEFAULT_POSITIONS,
                                                    DEFAULT_STRENGTH_FACTOR, DIRECTIONS, CausalSettings)

#: Top words of a concept read in captions without ground truth.
N_WORDS = 3
#: Caption pairs kept per concept and mode (``add`` / ``ablate``) for the report.
N_EXAMPLES = 2
__all__ = ["DEFAULT_LAYER", "DEFAULT_N_IMAGES", "DEFAULT_POSITIONS", "DEFAULT_STRENGTH_FACTOR", "DIRECTIONS",
           "METRICS", "CausalSettings", "causal_evaluation", "causal_scores", "concept_scores", "format_table",
           "is_fluent", "metrics_row", "specificity", "steered_has", "word_scores"]


class _Runner:
    """The test images, their captions before any intervention and the token steps, shared by every
    concept and control of one evaluation."""

    def __init__(self, concepts, test_meta, model, n_images, seed, batch_size):
        from mmconcepts.data.readers import load_image
        from mmconcepts.extract.extraction import store_reading
        from mmconcepts.extract.token_match import WordMatcher
        from mmconcepts.concepts.concept_set import model_for
        from mmconcepts.models.generation import decode, generate_ids

        rows = self._unique(test_meta)  # one row per image
        if n_images is not None and n_images < len(rows):
            rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n_images))]
        if not rows:
            raise MMConceptsError("no test image to intervene on")
        self.meta = rows
        self.concepts = concepts
        self.adapter = model_for(concepts, model)
        self.reading = store_reading(concepts.manifest, concepts.token)
        self.token = self.reading["token"]
        self.prompt = self.adapter.prompt(self.reading["instruction"])
        self.batch_size = batch_size
        self.pils = [load_image(m["image"]) for m in rows]
        ids = generate_ids(self.adapter, self.pils, self.prompt, **self._generation())
        matcher = WordMatcher(self.token, self.reading["also"])
        self.steps = []
        for row in ids:
            found = matcher.first_piece(self.adapter.tokenizer, row)
            self.steps.append(found[0] if found is not None else 0)
        self.before = decode(self.adapter, ids)
        self.truth = [token_object(m["attributes"]["objects"], self.token) if "attributes" in m else None
                      for m in rows]
        self._Z: dict = {}
        self.cache = self._prompt_cache(ids)

    def _prompt_cache(self, ids):
        """Each image read with the prompt once (:class:`~mmconcepts.models.prompt_cache.PromptCache`), every
        intervention on it starting from there; ``None`` where that does not apply, or where generating from it
        does not give back the captions before, ``ids``, exactly (the interventions then read each image again)."""
        from mmconcepts.models.prompt_cache import PromptCache

        return PromptCache.checked(self.adapter, self.pils, self.prompt, ids, **self._generation())

    @staticmethod
    def _unique(test_meta):
        rows, seen = [], set()
        for m in test_meta:
            if m["image"] not in seen:
                seen.add(m["image"])
                rows.append(m)
        return rows

    def states(self, layer: str):
        from mmconcepts.extract.features import load_features

        if layer not in self._Z:
            self._Z[layer], _ = load_features(self.concepts.features, layer, self.concepts.token)
        return self._Z[layer]

    def mean(self, layer: str):
        from mmconcepts.extract.features import mean_feature

        key = ("mean", layer)
        if key not in self._Z:
            self._Z[key] = mean_feature(self.concepts.features, layer, self.concepts.token)
        return self._Z[key]

    def _generation(self) -> dict:
        """The lengths and batch size of every generation of the evaluation (the store's caption lengths)."""
        return dict(max_new_tokens=self.reading["max_new_tokens"], min_new_tokens=self.reading["min_new_tokens"],
                    batch_size=self.batch_size)

    def run(self, indices, steering: dict, per_row: dict | None = None) -> list[str]:
        """The captions of images ``indices`` under ``steering`` (``per_row``: keywords, one per index)."""
        from mmconcepts.interventions.steering import chunk_steering
        from mmconcepts.models.generation import decode, generate_ids

        if not indices:
            return []
        pils = [self.pils[i] for i in indices]
        steps = [self.steps[i] for i in indices]
        context = chunk_steering(self.adapter, steering, steps, per_row)
        # the cache holds the prompt read without any intervention: only for one on the last positions
        cache = self.cache if steering.get("positions") != "all" else None
        return decode(self.adapter, generate_ids(self.adapter, pils, self.prompt, **self._generation(),
                                                 context=context, prompt_cache=cache))


def _direction(runner, k: int, direction: str, layer: str, seed: int):
    """The unit direction of concept ``k``, the training states read once per evaluation (the runner's)."""
    from mmconcepts.interventions.steer_captions import direction_for

    return direction_for(runner.concepts, k, direction, layer, seed * 1000 + k,
                         states=lambda: runner.states(layer), mean=lambda: runner.mean(layer))


def _examples(runner, k: int, words, target, mode: str, pairs) -> list[dict]:
    """Up to :data:`N_EXAMPLES` caption pairs of one concept and mode: successes first, then changed captions,
    then the rest, each flagged ``success``."""
    def success(i, after):
        if target is not None:
            return steered_has(after, runner.token, target) == (mode == "add")
        return has_words(after, words) == (mode == "add")

    rows = [(i, a, success(i, a), a != runner.before[i]) for i, a in pairs]
    rows.sort(key=lambda r: (not r[2], not r[3]))  # stable: image order within each group
    return [{"concept": k, "words": list(words), "target": list(target) if target else None, "mode": mode,
             "image": str(runner.meta[i]["image"]), "before": runner.before[i], "after": a, "success": ok}
            for i, a, ok, _ in rows[:N_EXAMPLES]]


def _chosen(concepts, indices, shapes: bool) -> list[tuple[int, tuple | None, list]]:
    """``(k, target, words)`` of the concepts evaluated: on ShapesWorld those whose first word names an attribute
    value (:func:`~mmconcepts.data.truth.concept_target`), without truth those with words."""
    chosen = []
    for k in range(concepts.n_concepts) if indices is None else indices:
        words = concepts.words(k)
        target = concept_target(words) if shapes else None
        if (shapes and target is not None) or (not shapes and words):
            chosen.append((k, target, words[:N_WORDS]))
    return chosen


def _rows_of(runner, chosen, shapes: bool) -> dict[int, tuple[list[int], list[int]]]:
    """Per concept, the images to steer (the token object lacks the target) and to ablate (it has it)."""
    all_rows = list(range(len(runner.pils)))
    if not shapes:
        return {k: (all_rows, all_rows) for k, _, _ in chosen}
    known = [i for i in all_rows if runner.truth[i] is not None]  # the image has a token object
    return {k: ([i for i in known if runner.truth[i].get(target[0]) != target[1]],
                [i for i in known if runner.truth[i].get(target[0]) == target[1]]) for k, target, _ in chosen}


def _captions(runner, chosen, rows_of, strengths, direction: str, layer: str, settings: CausalSettings,
              ablate: bool) -> tuple[dict, dict]:
    """The steered and ablated captions of each concept, ``({k: [caption per steered image]}, {k: [...]})``:
    every concept's interventions share the batches, one row per (concept, image)."""
    import torch

    jobs = [(k, i) for k, _, _ in chosen for i in rows_of[k][0]]
    vectors = {k: _direction(runner, k, direction, layer, settings.seed) for k, _, _ in chosen}
    steered = runner.run([i for _, i in jobs], dict(layer=layer, positions=settings.positions), per_row=dict(
        direction=torch.stack([vectors[k] for k, _ in jobs]) if jobs else None,
        strength=[strengths[k] for k, _ in jobs]))
    ablate_jobs = [(k, i) for k, _, _ in chosen for i in rows_of[k][1]] if ablate else []
    ablations = runner.run([i for _, i in ablate_jobs], dict(layer=layer, positions=settings.positions,
                                                             mode="ablate", dictionary=runner.concepts),
                           per_row=dict(concept=[k for k, _ in ablate_jobs]))
    steered_of, ablated_of = {}, {}
    for (k, _), caption in zip(jobs, steered):
        steered_of.setdefault(k, []).append(caption)
    for (k, _), caption in zip(ablate_jobs, ablations):
        ablated_of.setdefault(k, []).append(caption)
    return steered_of, ablated_of


def _concept_row(runner, k: int, target, words, steer_rows, after, ablate_rows, ablated, shapes: bool) -> dict:
    """The per-concept row of ``causal.json``: its metrics and caption counts, its words and target."""
    if shapes:
        row = concept_scores([(runner.truth[i], runner.before[i], a) for i, a in zip(steer_rows, after)],
                             [(runner.truth[i], runner.before[i], a) for i, a in zip(ablate_rows, ablated)],
                             runner.token, target)
    else:
        row = word_scores([(runner.before[i], a) for i, a in zip(steer_rows, after)],
                          [(runner.before[i], a) for i, a in zip(ablate_rows, ablated)], words)
    return {**row, "concept": k, "words": list(words), "target": list(target) if target else None}


def causal_evaluation(concepts, test_meta, model=None, settings: CausalSettings | None = None,
                      **fields) -> dict[str, CausalScores]:
    """:func:`causal_scores` for several directions sharing the same images and captions before.

    ``settings`` is a :class:`~mmconcepts.evaluation.causal.settings.CausalSettings`, or its fields as keywords
    (``directions=``, ``n_images=``, ``seed=``, ...; see :func:`causal_scores`).

    Every concept's interventions share the generation batches (one row per concept and image), and, where
    the model allows it (:class:`~mmconcepts.models.prompt_cache.PromptCache`; checked on the captions before),
    every generation of an image starts from that image read once with the prompt: the captions are those of
    reading each image again, in a fraction of the time.

    Returns
    -------
    dict
        ``{direction: CausalScores}`` for each of ``settings.directions``.
    """
    from mmconcepts.concepts.concept_set import ConceptSet, load_concepts
    from mmconcepts.interventions.directions import default_strength
    from mmconcepts.params import settings_from

    settings = settings_from(CausalSettings, settings, fields, "causal")
    concepts = concepts if isinstance(concepts, ConceptSet) else load_concepts(concepts, require_grounding=True)
    batch_size = settings.batch_size or concepts.manifest.get("batch_size") or 32
    image = concepts.positions == "image"  # image-token concepts: :mod:`.image_tokens`
    if image:
        from mmconcepts.evaluation.causal.image_tokens import ImageRunner, patch_targets

        runner = ImageRunner(concepts, test_meta, model, settings.n_images, settings.seed, batch_size,
                             settings.ablate_where)
    else:
        runner = _Runner(concepts, test_meta, model, settings.n_images, settings.seed, batch_size)
    factor = settings.image_strength_factor if image else settings.strength_factor
    layer = settings.layer
    name = runner.adapter.resolve_layer(concepts.summary["layer"] if layer is None else layer)
    own_layer = name == runner.adapter.resolve_layer(concepts.summary["layer"])
    points = bool(getattr(concepts.dictionary, "concepts_are_points", False))
    shapes = all("attributes" in m for m in runner.meta)
    chosen = patch_targets(concepts, settings.concept_indices) if image and shapes else None  # patch truth
    chosen = _chosen(concepts, settings.concept_indices, shapes) if chosen is None else chosen
    rows_of = _rows_of(runner, chosen, shapes)
    strengths = {k: default_strength(concepts, k, factor) for k, _, _ in chosen}
    results = {}
    for direction in settings.directions:
        ablate = settings.ablate and direction == "concept" and own_layer and not points
        steered_of, ablated_of = _captions(runner, chosen, rows_of, strengths, direction, name, settings, ablate)
        per_concept, examples = [], []
        for k, target, words in chosen:
            steer_rows, ablate_rows = rows_of[k]
            after, ablated = steered_of.get(k, []), ablated_of.get(k, [])
            if not ablated:
                ablate_rows = []
            row = _concept_row(runner, k, target, words, steer_rows, after, ablate_rows, ablated, shapes)
            per_concept.append({**row, "strength": round(strengths[k], 4)})
            for mode, pairs in (("add", list(zip(steer_rows, after))), ("ablate", list(zip(ablate_rows, ablated)))):
                examples += _examples(runner, k, words, target, mode, pairs)
        means = {m: mean([r.get(m) for r in per_concept]) for m in METRICS}
        results[direction] = CausalScores(
            CausalRow(**{m: round(v, 4) for m, v in means.items() if v is not None}), n_concepts=len(per_concept),
            n_images=len(runner.pils), direction=direction, layer=name, positions="image" if image else
            settings.positions, strength_factor=float(factor), ground_truth=shapes, concepts=per_concept,
            examples=examples, ablate_where=settings.ablate_where if image and ablate else None)
    return results


def causal_scores(concepts, test_meta, model=None, *, direction: str = "concept",
                  strength_factor: float = DEFAULT_STRENGTH_FACTOR, positions: str = DEFAULT_POSITIONS,
                  layer=DEFAULT_LAYER, n_images: int | None = DEFAULT_N_IMAGES, seed: int = 0,
                  concept_indices=None, batch_size: int | None = None) -> CausalScores:
    """Steering success, ablation success, specificity and fluency of a set of concepts (module docstring).

    Parameters
    ----------
    concepts : ConceptSet or path
        A grounded concepts folder.
    test_meta : list of dict
        Test metadata rows (``image``; ``attributes`` on ShapesWorld), e.g. of the test feature store.
    model : ModelAdapter, options, id or None
        The model (``None``: the one the store's run record names).
    direction : ``"concept"``, ``"centred"``, ``"random"`` or ``"diffmean"``
        What is added when steering (:func:`~mmconcepts.interventions.directions.unit_direction`); ablation is
        measured with ``"concept"`` only.
    strength_factor : float
        The added vector's norm in multiples of the concept's typical contribution.
    positions : ``"token"``, ``"after"`` or ``"all"``
        Where (:class:`~mmconcepts.interventions.steering.Steering`); ``"token"``/``"after"`` start at the step
        the token of interest is predicted at in the caption before (step 0 when it was not generated).
    layer : layer or None
        Where to steer (``None``: the dictionary's layer; ablation only there).
    n_images : int or None
        Test images (one per image of ``test_meta``; a seeded sample), ``None``: all.
    seed : int
        The image sample and the random directions.
    concept_indices : iterable of int or None
        Only these concepts.
    batch_size : int or None
        Captions per generation batch (``None``: the batch size the concepts' feature store generated its
        captions with, else 32).

    Returns
    -------
    CausalScores
        Reads as ``{steering_success, ablation_success, specificity, fluency}`` (each absent when it does not
        apply), ``n_concepts``, ``n_images``, the settings, ``concepts`` (the per-concept rows) and ``examples``
        (caption pairs before/after).
    """
    settings = CausalSettings(directions=(direction,), strength_factor=strength_factor, positions=positions,
                              layer=layer, n_images=n_images, seed=seed, concept_indices=concept_indices,
                              batch_size=batch_size)
    return causal_evaluation(concepts, test_meta, model, settings)[direction]
