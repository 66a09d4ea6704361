"""Caption accuracy of a captioner on ShapesWorld, from the ground-truth attribute records."""

from __future__ import annotations

from mmconcepts.data.shapesworld import ATTRIBUTES, parse_caption


def _truth(attributes: dict) -> list[dict]:
    return [{a: obj[a] for a in ATTRIBUTES} for obj in attributes["objects"]]


def _best_pairing(truth: list[dict], predicted: list[dict]) -> list[dict]:
    """For each true object, its caption object (``{}`` if none) in the pairing with the most right attributes."""
    from itertools import permutations

    padded = predicted + [{}] * max(0, len(truth) - len(predicted))
    best, best_right = None, -1
    for order in permutations(range(len(padded)), len(truth)):
        n_right = sum(padded[j].get(a) == obj[a] for obj, j in zip(truth, order) for a in ATTRIBUTES)
        if n_right > best_right:
            best, best_right = [padded[j] for j in order], n_right
    return best


def caption_accuracy(captions: list[str], attributes: list[dict]) -> dict:
    """Per-attribute accuracy of generated captions against ShapesWorld ground truth.

    The objects of a caption are read back with :func:`~mmconcepts.data.shapesworld.parse_caption` and matched
    one to one with the true objects, in the pairing that gets the most attributes right (captions name the
    objects in any order). An attribute of a true object counts as right when its caption object names the
    same value; a missing object counts as wrong for every attribute. ``exact`` is the share of captions whose
    objects are all right, none missing and none extra.

    Examples
    --------
    >>> truth = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"}]}
    >>> caption_accuracy(["a little red star on the left"], [truth])["exact"]
    1.0
    """
    if len(captions) != len(attributes):
        raise ValueError(f"{len(captions)} captions for {len(attributes)} attribute records")
    right = {a: 0 for a in ATTRIBUTES}
    n_objects = 0
    exact = 0
    for text, record in zip(captions, attributes):
        truth = _truth(record)
        predicted = parse_caption(text)
        n_objects += len(truth)
        pairing = _best_pairing(truth, predicted)
        for obj, guess in zip(truth, pairing):
            for a in ATTRIBUTES:
                right[a] += guess.get(a) == obj[a]
        exact += len(predicted) == len(truth) and all(g == o for o, g in zip(truth, pairing))
    n = max(len(captions), 1)
    result = {a: right[a] / max(n_objects, 1) for a in ATTRIBUTES}
    result["exact"] = exact / n
    result["n_images"] = len(captions)
    return result


def score_model(data, model=None, batch_size: int = 32, max_new_tokens: int = 50, progress: bool = True,
                **data_options) -> dict:
    """Caption a ShapesWorld dataset with ``model`` (an adapter, :class:`~mmconcepts.models.ModelOptions` or
    an id) and return :func:`caption_accuracy` of the result; ``data_options`` go to
    :func:`~mmconcepts.data.open_dataset` (``split``, ``limit``, ...)."""
    from mmconcepts.data import open_dataset
    from mmconcepts.errors import MMConceptsError
    from mmconcepts.models import as_adapter

    dataset = open_dataset(data, **data_options)
    if not all(s.attributes for s in dataset):
        raise MMConceptsError(f"{dataset.source} has no ShapesWorld attributes; score-captions needs a dataset "
                              "made by `mmconcepts shapesworld`")
    adapter = as_adapter(model)
    captions = adapter.caption([s.load() for s in dataset], batch_size=batch_size, max_new_tokens=max_new_tokens,
                               progress=progress)
    result = caption_accuracy(captions, [s.attributes for s in dataset])
    result["model"] = adapter.model_id
    return result
