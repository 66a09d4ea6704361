"""Model adapters over transformers: one module per family, a generic fallback, and :func:`load_model`.

>>> from mmconcepts.models import load_model
>>> adapter = load_model("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")  # doctest: +SKIP
>>> adapter.caption([image])  # doctest: +SKIP
"""

from mmconcepts.models.base import DEFAULT_INSTRUCTION, ModelAdapter
from mmconcepts.models.loading import (ADAPTERS, DEFAULT_MODEL_DIR, DTYPES, DEVICES, EMBEDDED_MODEL, as_adapter,
                                      load_model)
from mmconcepts.models.options import ModelOptions

__all__ = ["ADAPTERS", "DEFAULT_INSTRUCTION", "DEFAULT_MODEL_DIR", "DEVICES", "DTYPES", "EMBEDDED_MODEL", "ModelAdapter",
           "ModelOptions", "as_adapter", "load_model"]
