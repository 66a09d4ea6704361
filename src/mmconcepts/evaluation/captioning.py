"""Caption accuracy of a captioner on ShapesWorld: caption a dataset and score the captions against its
ground-truth attribute records (:func:`~mmconcepts.data.truth.caption_accuracy`)."""

from __future__ import annotations

from mmconcepts.data.truth import caption_accuracy

__all__ = ["score_model"]


def score_model(data, model=None, batch_size: int = 32, max_new_tokens: int = 50, progress: bool = True,
                **data_options) -> dict:
    """Caption a ShapesWorld dataset with ``model`` (an adapter, :class:`~mmconcepts.models.ModelOptions` or
    an id) and return :func:`~mmconcepts.data.truth.caption_accuracy` of the result; ``data_options`` go to
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
