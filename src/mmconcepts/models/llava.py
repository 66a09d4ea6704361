"""LLaVA adapters: llava-1.5 (``llava``), LLaVA-NeXT (``llava_next``) and LLaVA-OneVision (``llava_onevision``).

All three keep the language model at ``model.language_model`` (``language_model.model`` before
transformers 4.52) with its decoder ``layers`` and final ``norm``; ``lm_head`` sits at the top.
"""

from __future__ import annotations

from mmconcepts.models.base import ModelAdapter


class LlavaAdapter(ModelAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` and its NeXT / OneVision variants."""

    family = "llava"
    model_types = ("llava", "llava_next", "llava_onevision")
    text_model_paths = ("model.language_model", "language_model.model")
