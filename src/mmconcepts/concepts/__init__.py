"""Concepts read as words and images: grounding a learnt dictionary and reading a concepts folder back.

:mod:`~.settings` holds :class:`GroundingSettings`; :mod:`~.decoding` reads a concept as words through the
model's unembedding and :mod:`~.vocabulary` says which decoded tokens are words; :mod:`~.images` keeps a
concept's top images (links, thumbnails); :mod:`~.ground` writes ``grounding.json``; :mod:`~.concept_set`
reads a concepts folder back (:class:`ConceptSet`). Local explanations of one image are
:mod:`mmconcepts.explanations`.
"""

from mmconcepts.concepts.concept_set import ConceptSet, load_concepts, top_samples
from mmconcepts.concepts.ground import ground
from mmconcepts.concepts.settings import GroundingSettings

__all__ = ["ConceptSet", "GroundingSettings", "ground", "load_concepts", "top_samples"]
