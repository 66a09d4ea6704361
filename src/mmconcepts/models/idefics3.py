"""Idefics3 and SmolVLM adapter (SmolVLM v1 checkpoints are ``idefics3``, SmolVLM2 ones ``smolvlm``).

The language model sits at ``model.text_model`` with its decoder ``layers`` and final ``norm``;
``lm_head`` sits at the top. The processor wants images nested per prompt (``[[img], [img]]``), which is how
:meth:`~mmconcepts.models.base.ModelAdapter.encode` batches for every family.
"""

from __future__ import annotations

from mmconcepts.models.base import ModelAdapter


class Idefics3Adapter(ModelAdapter):
    """Adapter for ``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration``."""

    family = "idefics3"
    model_types = ("idefics3", "smolvlm")
    text_model_paths = ("model.text_model",)
