"""Concepts read as words and images: grounding a learnt dictionary, reading a concepts folder back, and
local explanations.

:mod:`~.settings` holds :class:`GroundingSettings`; :mod:`~.decoding` reads a concept as words through the
model's unembedding and :mod:`~.vocabulary` says which decoded tokens are words; :mod:`~.images` keeps a
concept's top images (links, thumbnails); :mod:`~.ground` writes ``grounding.json``; :mod:`~.concept_set`
reads a concepts folder back (:class:`ConceptSet`); :mod:`~.explain` explains one image by its top concepts.
"""

from mmconcepts.concepts.concept_set import ConceptSet, load_concepts, top_samples
from mmconcepts.concepts.explain import explain, format_explanation
from mmconcepts.concepts.ground import ground
from mmconcepts.concepts.settings import GroundingSettings

__all__ = ["ConceptSet", "GroundingSettings", "explain", "format_explanation", "ground", "load_concepts",
           "top_samples"]
