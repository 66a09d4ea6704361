"""Model adapters over transformers: one module per family, a generic fallback, and :func:`load_model`.

>>> import random
>>> from mmconcepts.data.shapesworld import render, sample_scene
>>> from mmconcepts.models import load_model
>>> adapter = load_model()          # the shipped ShapesWorld captioner: offline, 4M parameters
>>> adapter.caption([render(sample_scene(random.Random(0)))])
['one triangle at the top in red of little size and one triangle in purple at the bottom of little size']

A model of the Hugging Face hub (or a local folder) loads the same way:

>>> adapter = load_model("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")  # doctest: +SKIP
"""

from mmconcepts.models.base import DEFAULT_INSTRUCTION, ModelAdapter
from mmconcepts.models.loading import (ADAPTERS, DEFAULT_MODEL_DIR, DTYPES, DEVICES, EMBEDDED_MODEL, as_adapter,
                                      load_model)
from mmconcepts.models.options import ModelOptions

__all__ = ["ADAPTERS", "DEFAULT_INSTRUCTION", "DEFAULT_MODEL_DIR", "DEVICES", "DTYPES", "EMBEDDED_MODEL", "ModelAdapter",
           "ModelOptions", "as_adapter", "load_model"]
