"""Qwen2-VL and Qwen2.5-VL adapter.

The language model sits at ``model.language_model`` (``model`` before transformers 4.52) with its decoder
``layers`` and final ``norm``; ``lm_head`` sits at the top. The processor resizes each image to a multiple
of ``patch_size * merge_size`` within its pixel budget, so images of different sizes give prompts of
different lengths; :meth:`~mmconcepts.models.base.ModelAdapter.encode` left pads them.
"""

from __future__ import annotations

from mmconcepts.models.base import ModelAdapter


class Qwen2VLAdapter(ModelAdapter):
    """Adapter for ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``."""

    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    text_model_paths = ("model.language_model", "model")
