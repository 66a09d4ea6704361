"""Fallback adapter for image-text-to-text families without a dedicated adapter.

It finds the language model by inspecting the module tree: the module that owns the input embeddings
(``model.get_input_embeddings()``) as a direct child, then among its children the decoder layers (a
``ModuleList`` named ``layers``/``h``/``blocks``, else the longest ``ModuleList``) and the final norm (a child
named ``norm``/``final_layernorm``/``ln_f``/``norm_f``/``final_norm``, else the last child whose class name
contains ``Norm``). The unembedding is ``model.get_output_embeddings()``. When any of these is missing it
raises :class:`~mmconcepts.errors.MMConceptsError` naming what it could not find.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.base import ModelAdapter

LAYER_NAMES = ("layers", "h", "blocks", "layer")
NORM_NAMES = ("norm", "final_layernorm", "ln_f", "norm_f", "final_norm", "final_layer_norm")
VISION_WORDS = ("vision", "visual", "image", "vit", "img")


def _layers_of(module):
    import torch

    children = dict(module.named_children())
    for name in LAYER_NAMES:
        if isinstance(children.get(name), torch.nn.ModuleList) and len(children[name]) > 0:
            return children[name]
    lists = [c for c in children.values() if isinstance(c, torch.nn.ModuleList) and len(c) > 0]
    return max(lists, key=len) if lists else None


def _norm_of(module):
    children = dict(module.named_children())
    for name in NORM_NAMES:
        if name in children:
            return children[name]
    norms = [c for c in children.values() if "norm" in type(c).__name__.lower()]
    return norms[-1] if norms else None


class GenericAdapter(ModelAdapter):
    """Adapter that locates decoder layers, final norm and lm_head by inspecting the module tree."""

    family = "generic"

    def _candidates(self):
        """``(path, module)`` pairs that may hold the decoder: embedding owners first, then non-vision parents."""
        embeddings = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        modules = list(self.model.named_modules())
        owners = [(p, m) for p, m in modules if embeddings is not None and any(c is embeddings for c in m.children())]
        others = [(p, m) for p, m in modules if not any(w in p.lower() for w in VISION_WORDS)]
        return owners[::-1] + others

    def _find_text_model(self):
        for path, module in self._candidates():
            layers, norm = _layers_of(module), _norm_of(module)
            if layers is not None and norm is not None:
                self._layers, self._norm = layers, norm
                return path, module
        raise MMConceptsError(
            f"cannot find the decoder layers and final norm of {type(self.model).__name__} by inspecting its "
            "modules; this architecture is not supported (supported: llava, llava_next, llava_onevision, "
            "qwen2_vl, qwen2_5_vl, idefics3, smolvlm)")

    def decoder_layers(self):
        """The decoder layers found by inspection."""
        return self._layers

    def final_norm(self):
        """The final norm found by inspection."""
        return self._norm
