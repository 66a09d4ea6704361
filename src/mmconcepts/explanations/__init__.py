"""Local explanations: which concepts a model uses when it says the token of interest about one image, and,
when asked, where in the image each comes from (the maps of :mod:`mmconcepts.attribution`).

:mod:`~.explain` holds :func:`explain` (one image, its top concepts, their words, images and maps),
:func:`top_concepts` and :func:`format_explanation`.
"""

from mmconcepts.explanations.explain import explain, format_explanation, image_top_concepts, top_concepts

__all__ = ["explain", "format_explanation", "image_top_concepts", "top_concepts"]
