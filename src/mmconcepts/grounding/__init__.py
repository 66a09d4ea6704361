"""Grounding: concepts as words (through the unembedding) and images; local explanations."""

from mmconcepts.grounding.concepts import ConceptSet, ground, load_concepts, top_samples
from mmconcepts.grounding.explain import explain, format_explanation

__all__ = ["ConceptSet", "explain", "format_explanation", "ground", "load_concepts", "top_samples"]
