"""Encoder-decoder image-text-to-text models (Florence-2): the text is read from the *decoder*.

The image and the prompt go into the encoder; the caption comes out of the decoder, one token per step. So
the layers mmconcepts reads and steers are the decoder's (``layers`` of the module ``get_decoder()`` gives,
or its ``decoder`` child), generation returns decoder tokens after the decoder's start token
(:meth:`~mmconcepts.models.base.ModelAdapter.generate` cuts it), and teacher mode puts the caption into
``decoder_input_ids`` (:func:`~mmconcepts.models.prompts.append_tokens`). A post-norm decoder (BART) has no
final norm: the last layer's output is what the unembedding reads, so ``"norm"`` hooks that output and the
norm that word decoding applies is the identity.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.base import ModelAdapter


class EncoderDecoderAdapter(ModelAdapter):
    """Adapter for ``...ForConditionalGeneration`` models whose config says ``is_encoder_decoder``."""

    family = "encoder_decoder"

    def _find_text_model(self):
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        for candidate in (decoder, getattr(decoder, "decoder", None)):
            if candidate is not None and hasattr(candidate, "layers") and len(candidate.layers) > 0:
                return self._module_path(candidate), candidate
        raise MMConceptsError(f"cannot find the decoder layers of {type(self.model).__name__}; this encoder-decoder "
                              "architecture is not supported")

    def _own_norm(self):
        for name in ("layer_norm", "norm", "final_layer_norm"):
            module = getattr(self._text_model, name, None)
            if module is not None:
                return module
        return None

    def final_norm(self):
        """The decoder's final norm; ``Identity`` for a post-norm decoder (BART), whose last layer's output is
        what the unembedding reads as it is."""
        import torch

        return self._own_norm() or torch.nn.Identity()

    def layer_module(self, name):
        """As for any model, except that ``"norm"`` of a post-norm decoder is its last layer's output."""
        if self.resolve_layer(name) == "norm" and self._own_norm() is None:
            return self.decoder_layers()[-1]
        return super().layer_module(name)

    def info(self) -> dict:
        info = super().info()
        if self._own_norm() is None:
            info["final_norm"] = f"none (post-norm decoder: 'norm' reads {self._module_path(self.decoder_layers()[-1])})"
        return info

    def decoder_start(self) -> list[int]:
        """The ids generation puts before the first new token: the decoder's start token and a forced BOS."""
        config, generation = self.model.config, getattr(self.model, "generation_config", None)
        ids = []
        for name in ("decoder_start_token_id", "forced_bos_token_id"):
            value = getattr(generation, name, None)
            if value is None:
                value = getattr(config, name, None)
            if value is None and name == "decoder_start_token_id":
                raise MMConceptsError(f"'{self.model_id}' names no decoder start token; it cannot be read")
            if value is not None:
                ids.append(int(value))
        return ids
