"""``steer``: caption images without and with an intervention by a concept (:class:`Steering`), the way the
concepts' feature store read its images. See :mod:`mmconcepts.interventions.steering`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mmconcepts.errors import MMConceptsError, check_count
from mmconcepts.interventions.directions import (DEFAULT_POSITIONS, DIRECTIONS, _choice, _finite, check_concept,
                                             default_strength, unit_direction)
from mmconcepts.interventions.steering import POSITIONS, Steering, chunk_steering
from mmconcepts.models.generation import decode, generate_ids


def direction_for(concepts, k: int, direction: str, layer: str, seed: int, *, states=None, mean=None):
    """The unit direction :func:`steer` adds (:func:`~mmconcepts.interventions.directions.unit_direction`).

    ``states`` / ``mean`` read the training states at ``layer`` and their mean when the direction needs them
    (zero-argument functions; default: from the concepts' feature store); a layer the store lacks is a
    one-line error."""
    from mmconcepts.extract.features import load_features
    from mmconcepts.extract.features import mean_feature

    states = states or (lambda: load_features(concepts.features, layer, concepts.token)[0])
    mean = mean or (lambda: mean_feature(concepts.features, layer, concepts.token))

    def explained(read):
        def read_or_explain():
            try:
                return read()
            except MMConceptsError:
                raise MMConceptsError(f"the {direction} direction needs the training states at layer {layer}, "
                                      "which the concepts' feature store does not hold; steer at the "
                                      "dictionary's layer") from None
        return read_or_explain

    return unit_direction(concepts, k, direction, seed=seed, states=explained(states), mean=explained(mean))


def steer(concepts, images, concept: int, *, strength: float | None = None, ablate: bool = False,
          direction: str = "concept", positions: str = DEFAULT_POSITIONS, layer=None, model=None, seed: int = 0,
          max_new_tokens: int | None = None, batch_size: int = 16) -> list[dict]:
    """Caption images without and with an intervention on one concept.

    For each image the model captions it as the concepts' feature store read its images (the store's
    instruction and caption lengths, greedy decoding); the step at which the token of interest is predicted
    is the first piece of its first match in the generated tokens; the image is captioned again inside a
    :class:`Steering` that starts at that step.

    Parameters
    ----------
    concepts : path or ConceptSet
        A concepts folder (``mmconcepts learn``).
    images : path or list of paths
        The images (a saved Hugging Face dataset's ``<folder>/<split>#<row>`` references too).
    concept : int
        The concept index.
    strength : float or None
        The norm of the added vector (the directions are unit); ``None``: :func:`default_strength`. Not used
        with ``ablate``.
    ablate : bool
        Remove the concept's contribution (``mode="ablate"``) instead of adding its direction.
    direction : ``"concept"``, ``"random"`` or ``"diffmean"``
        What is added (module docstring); ``ablate`` takes only ``"concept"``.
    positions : ``"token"``, ``"after"`` or ``"all"``
        Where (:class:`Steering`); with ``"token"``/``"after"`` the step is the token's, or 0 (the first new
        token) when the unsteered caption does not hold the token (``"token_step": None``).
    layer : str, int or None
        The layer to steer; ``None``: the dictionary's. Adding at another layer uses the dictionary's
        direction there (``"diffmean"`` reads that layer of the store); ablating only works at the
        dictionary's layer.
    model : ModelAdapter, ModelOptions, id or None
        The model (:func:`~mmconcepts.concepts.concept_set.model_for`: unset options follow the store).
    seed : int
        The seed of ``direction="random"``.
    max_new_tokens : int or None
        Caption length; ``None``: the store's.
    batch_size : int
        Images per ``generate`` call (:func:`~mmconcepts.models.generation.generate_ids`; each row is steered
        from its own step).

    Returns
    -------
    list of dict
        Per image ``{"image", "caption", "steered", "concept", "strength", "mode", "direction", "positions",
        "layer", "token_step"}``: the caption before and after, the strength used (``None`` for an ablation)
        and the step the token was predicted at (``None``: not generated).

    Examples
    --------
    Eight concepts of "circle" learnt on 160 ShapesWorld images; concept 7 reads "red":

    >>> from mmconcepts.concepts import ground
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> from mmconcepts.decompose import learn
    >>> from mmconcepts.extract import extract
    >>> _ = write_dataset("shapes/test", n=6, seed=0, split="test")
    >>> image = "shapes/test/images/000005.png"                          # the image to steer
    >>> _ = write_dataset("shapes/train", n=160, seed=0)
    >>> _ = extract("shapes/train", "circle", out="runs/circle", layers=["norm"], mode="teacher", progress=False)
    >>> _ = learn("runs/circle", "norm", out="runs/concepts", n_concepts=8, seed=0)
    >>> [w["word"] for w in ground("runs/concepts")["concepts"][7]["words"]]
    ['red']
    >>> result = steer("runs/concepts", image, 7)[0]
    >>> result["caption"]
    'one circle of big size at the top in orange , one triangle of big size on the left in purple and one ...'
    >>> result["steered"]
    'one red circle of big size at the top , one triangle of big size in purple on the left and one ...'
    >>> steer("runs/concepts", image, 7, direction="random")[0]["steered"]   # the control: as before
    'one circle of big size at the top in orange , one triangle of big size on the left in purple and one ...'
    """
    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.extract.token_match import WordMatcher
    from mmconcepts.concepts.concept_set import ConceptSet, load_concepts, model_for

    concepts = concepts if isinstance(concepts, ConceptSet) else load_concepts(concepts)
    k = check_concept(concepts, concept)
    direction = _choice("direction", direction, DIRECTIONS)
    positions = _choice("positions", positions, POSITIONS)
    if ablate and direction != "concept":
        raise MMConceptsError("--ablate removes the concept's own contribution; --direction random/diffmean "
                              "only applies to adding a direction")
    if ablate and strength is not None:
        raise MMConceptsError("--ablate removes the concept's contribution as it is; --strength only applies "
                              "to adding a direction")
    if strength is not None:
        strength = _finite("strength", strength)
    check_count("seed (--seed)", seed, 0)
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 1):
        raise MMConceptsError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    images = list(images)
    if not images:
        raise MMConceptsError("no image given; pass --image IMG or --data DIR")
    pils = [load_image(image) for image in images]  # every image readable before the model loads
    adapter = model_for(concepts, model)
    width = int(concepts.directions.shape[1])
    if width != adapter.hidden_size:
        raise MMConceptsError(f"the concepts in {concepts.path} have dimension {width} but '{adapter.model_id}' "
                              f"has hidden size {adapter.hidden_size}: they come from another model; use the "
                              "model their features were extracted with (--model)")
    name = adapter.resolve_layer(concepts.summary["layer"] if layer is None else layer)
    reading = store_reading(concepts.manifest, concepts.token)
    if max_new_tokens is not None:
        reading["max_new_tokens"] = max_new_tokens
        reading["min_new_tokens"] = min(reading["min_new_tokens"], max_new_tokens)
    if ablate:
        intervention = dict(mode="ablate", dictionary=concepts, concept=k)
    else:
        strength = default_strength(concepts, k) if strength is None else strength
        intervention = dict(direction=direction_for(concepts, k, direction, name, seed), strength=strength)
    Steering(adapter, name, positions=positions, **intervention)  # checks the intervention before any caption
    token = reading["token"]
    matcher = WordMatcher(token, reading["also"]) if token else None
    prompt = adapter.prompt(reading["instruction"])
    generation = dict(max_new_tokens=reading["max_new_tokens"], min_new_tokens=reading["min_new_tokens"],
                      batch_size=batch_size)
    before = generate_ids(adapter, pils, prompt, **generation)
    steps = []
    for ids in before:
        found = matcher.first_piece(adapter.tokenizer, ids) if matcher is not None else None
        steps.append(found[0] if found is not None else None)
    after = generate_ids(adapter, pils, prompt, **generation, context=chunk_steering(
        adapter, dict(layer=name, positions=positions, **intervention), steps))
    results = []
    for image, caption, steered, token_step in zip(images, decode(adapter, before), decode(adapter, after), steps):
        results.append({"image": str(Path(image)), "caption": caption, "steered": steered, "concept": k,
                        "strength": None if ablate else float(strength), "mode": "ablate" if ablate else "add",
                        "direction": direction, "positions": positions, "layer": name, "token_step": token_step})
    return results


def format_steering(results: list[dict], words: Sequence[str] = (), token: str | None = None) -> str:
    """A short human-readable rendering of :func:`steer`'s results: per image the caption before and after."""
    if not results:
        return ""
    first = results[0]
    what = (f"ablate concept {first['concept']}" if first["mode"] == "ablate" else
            f"add {first['strength']:.4g} x the {first['direction']} direction of concept {first['concept']}")
    about = f" (words: {', '.join(words[:6])})" if words else ""
    lines = [f"{what}{about} at layer {first['layer']}, positions {first['positions']}"]
    for r in results:
        lines += [r["image"], f"  before: {r['caption']}", f"  after:  {r['steered']}"]
        if r["token_step"] is None and r["positions"] != "all":
            lines.append(f"  (the token {token or 'of interest'!r} was not generated: steered from the first new "
                         "token)")
    return "\n".join(lines)
