"""The adapter interface every model family implements: layers, norm, unembedding, prompt and batching.

Layer names
-----------
A decoder layer is addressed by its index (negative allowed); its canonical name is the absolute index as
a string (``"3"``). The final norm is ``"norm"``. Hidden states are read with forward hooks on
:meth:`ModelAdapter.layer_module`, all owned by :meth:`ModelAdapter.hooks`; a decoder layer's forward output
is a tensor, a tuple ``(hidden, ...)`` or a stack of streams, and :meth:`ModelAdapter.hidden_from_output`
finds the ``B x T x D`` states in any of them (:mod:`~mmconcepts.models.streams`).

With ``output_hidden_states=True`` transformers returns ``N + 1`` states: the embeddings, the outputs of
decoder layers ``0 .. N-2`` and the *normed* output of the last layer. So a hook on layer ``i < N-1`` gives
``hidden_states[i + 1]``, a hook on ``"norm"`` gives ``hidden_states[-1]``, and a hook on the last layer
gives its output before the final norm (which ``hidden_states`` does not contain).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable

from mmconcepts.errors import MMConceptsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmconcepts.models.hooks import Hooks

DEFAULT_INSTRUCTION = "Provide a one-sentence caption for the provided image."


def encode_inputs(processor, images: list, texts: list[str]) -> dict:
    """The processor's inputs for images (one per text) and texts, left padded, as CPU tensors: what every
    adapter feeds its model. A plain function of the processor, so DataLoader workers can run it.

    Images may be PIL images or paths (read by :func:`mmconcepts.data.load_image`: upright, RGB); they are
    converted to RGB and nested per prompt (``[[img], ...]``).
    """
    from mmconcepts.data.readers import load_image

    if len(images) != len(texts):
        raise MMConceptsError(f"got {len(images)} images for {len(texts)} prompts; pass one image per prompt")
    rgb = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        rgb.append(image if image.mode == "RGB" else image.convert("RGB"))
    processor.tokenizer.padding_side = "left"
    batch = processor(images=[[im] for im in rgb], text=list(texts), return_tensors="pt", padding=True)
    return dict(batch.items())


def context_length(model) -> int | None:
    """The most positions ``model``'s language model reads: ``max_position_embeddings`` of its text config
    (or of its config); ``None`` when the config does not say."""
    config = getattr(model, "config", None)
    for part in (getattr(config, "text_config", None), config):
        n = getattr(part, "max_position_embeddings", None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def check_room(adapter, prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse a generation whose prompt (image tokens included) and ``max_new_tokens`` exceed the model's
    context: the model would read positions it was never trained on."""
    context = context_length(getattr(adapter, "model", None))
    if context is None or prompt_tokens + max_new_tokens <= context:
        return
    name = getattr(adapter, "model_id", "the model")
    if prompt_tokens >= context:
        raise MMConceptsError(f"the prompt takes {prompt_tokens} tokens (image included), {name}'s whole context "
                              f"of {context}; use a shorter --instruction or a model with a longer context")
    raise MMConceptsError(f"the prompt takes {prompt_tokens} tokens (image included) and --max-new-tokens is "
                          f"{max_new_tokens}: {prompt_tokens + max_new_tokens} exceed {name}'s context of {context} "
                          f"tokens; pass --max-new-tokens {context - prompt_tokens} or less")


class ModelAdapter:
    """A loaded vision-language model with the handles mmconcepts needs.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        An image-text-to-text model (``...ForConditionalGeneration``), already on its device and dtype.
    processor : transformers.ProcessorMixin
        Its processor (tokenizer + image processor + chat template).
    model_id : str
        The hub id or local folder it was loaded from.

    Attributes
    ----------
    family : str
        The adapter family (``"llava"``, ``"qwen2_vl"``, ``"idefics3"``, ``"generic"``).
    model_types : tuple of str
        The config ``model_type`` values this adapter serves (the loading registry's keys).
    text_model_paths : tuple of str
        Dotted paths, tried in order, to the language model that holds ``layers`` and ``norm``.
    """

    family = "base"
    #: The hub commit the model was loaded at (``None`` for a local folder); set by ``load_model``.
    commit: str | None = None
    #: The ``--prompt-template`` the model is prompted with (``None``: its chat template); set by ``load_model``.
    prompt_template: str | None = None
    #: True for an adapter that holds only the unembedding and final norm (``load_head``).
    head_only = False
    model_types: tuple[str, ...] = ()
    text_model_paths: tuple[str, ...] = ()

    def __init__(self, model, processor, model_id: str):
        self.model = model
        self.processor = processor
        self.model_id = str(model_id)
        self.tokenizer = getattr(processor, "tokenizer", None)
        if self.tokenizer is None:
            raise MMConceptsError(f"the processor of '{self.model_id}' has no tokenizer; pass a complete model folder")
        self.tokenizer.padding_side = "left"
        self._text_model_path, self._text_model = self._find_text_model()

    # ---- module handles -------------------------------------------------------------------------------------
    def _find_text_model(self) -> tuple[str, "torch.nn.Module"]:
        """Return ``(path, module)`` of the language model that holds the decoder ``layers`` and ``norm``."""
        for path in self.text_model_paths:
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                continue
            if hasattr(module, "layers") and hasattr(module, "norm"):
                return path, module
        raise MMConceptsError(
            f"cannot find the decoder of {type(self.model).__name__} at {', '.join(self.text_model_paths)}; "
            "this transformers version moved it, please report it")

    @property
    def device(self) -> "torch.device":
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> "torch.dtype":
        """The floating dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    def decoder_layers(self) -> "torch.nn.ModuleList":
        """The language model's decoder layers, in order."""
        return self._text_model.layers

    def final_norm(self) -> "torch.nn.Module":
        """The norm applied after the last decoder layer, before the unembedding."""
        return self._text_model.norm

    def lm_head(self) -> "torch.nn.Module":
        """The unembedding (hidden state -> vocabulary logits)."""
        head = self.model.get_output_embeddings()
        if head is None:
            raise MMConceptsError(f"{type(self.model).__name__} has no unembedding (lm_head); it cannot generate text")
        return head

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.decoder_layers())

    @property
    def hidden_size(self) -> int:
        """Width of the decoder's hidden states."""
        return int(self.lm_head().weight.shape[1])

    @property
    def vocab_size(self) -> int:
        """Number of rows of the unembedding (may exceed ``len(tokenizer)`` when padded)."""
        return int(self.lm_head().weight.shape[0])

    @property
    def context_length(self) -> int | None:
        """The most positions the language model reads (:func:`context_length`); ``None``: not said."""
        return context_length(self.model)

    # ---- layers --------------------------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Canonical names of every readable layer: ``"0" .. "N-1"`` then ``"norm"``."""
        return [str(i) for i in range(self.num_layers)] + ["norm"]

    def _valid_layers(self, image_side: bool = True) -> str:
        from mmconcepts.models.vision_parts import valid_vision_layers

        n = self.num_layers
        more = valid_vision_layers(self.model) if image_side else ""
        return f"0..{n - 1}, -{n}..-1, norm" + (f" and, with --positions image, {more}" if more else "")

    def resolve_layer(self, spec: str | int) -> str:
        """Canonical name of a layer given as an index (negative allowed), a numeric string, ``"norm"``, or on
        the image side ``"vision.I"`` and ``"projector"`` (:mod:`~mmconcepts.models.vision_parts`)."""
        from mmconcepts.models.vision_parts import resolve_vision_layer

        text = str(spec).strip()
        if not isinstance(spec, bool) and text.lower() == "norm":
            return "norm"
        image_side = resolve_vision_layer(self.model, text, self.model_id) if isinstance(spec, str) else None
        if image_side is not None:
            return image_side
        try:
            index = int(text) if not isinstance(spec, bool) else None
        except ValueError:
            index = None
        n = self.num_layers
        if index is None or not -n <= index < n:
            raise MMConceptsError(f"unknown layer {str(spec)!r} for '{self.model_id}': valid layers are "
                                  f"{self._valid_layers()}")
        return str(index % n)

    def resolve_layers(self, specs: str | int | Iterable[str | int]) -> list[str]:
        """Resolve a comma-separated string or a list of layer specs; duplicates dropped, order kept."""
        if isinstance(specs, (str, int)):
            specs = [s for s in str(specs).split(",") if s.strip()]
        names = [self.resolve_layer(s) for s in specs]
        if not names:
            raise MMConceptsError(f"no layer given: valid layers are {self._valid_layers()}")
        return list(dict.fromkeys(names))

    def layer_module(self, name: str | int) -> "torch.nn.Module":
        """The module to hook for a layer: decoder layer ``i``, the final norm, a vision layer or the projector."""
        from mmconcepts.models.vision_parts import is_vision_layer, vision_module

        name = self.resolve_layer(name)
        if is_vision_layer(name):
            return vision_module(self.model, name)
        return self.final_norm() if name == "norm" else self.decoder_layers()[int(name)]

    @property
    def active_stream(self) -> int:
        """Which of stacked residual streams the model predicts from (Gemma 3n's ``altup_active_idx``; 0)."""
        config = self.model.config
        for part in (getattr(config, "text_config", None), config):
            value = getattr(part, "altup_active_idx", None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    def hidden_from_output(self, output) -> "torch.Tensor":
        """The ``B x T x D`` hidden states of a hooked layer's forward output (:func:`~.streams.find_stream`)."""
        from mmconcepts.models.streams import find_stream

        return find_stream(output, self.active_stream)[0]

    def replace_hidden(self, output, hidden):
        """``output`` with its hidden states replaced by ``hidden`` (what a forward hook returns to edit them)."""
        from mmconcepts.models.streams import find_stream

        return find_stream(output, self.active_stream)[1](hidden)

    def hooks(self) -> "Hooks":
        """A new, empty :class:`~mmconcepts.models.hooks.Hooks` on this model: the one owner of forward hooks
        (record, intervene, read the input, stop), entered as one context manager."""
        from mmconcepts.models.hooks import Hooks

        return Hooks(self)

    # ---- generation ----------------------------------------------------------------------------------------
    @property
    def is_encoder_decoder(self) -> bool:
        """Whether the prompt goes into an encoder and the text comes out of a decoder (Florence-2)."""
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    def generate(self, inputs: dict, *, max_new_tokens: int, min_new_tokens: int = 0) -> "torch.Tensor":
        """Greedy generation from processor ``inputs``: the new token ids only (``B x steps``; rows that end
        early are padded). A decoder-only model returns the prompt before them; an encoder-decoder one the
        decoder's start token: both are cut here, the one place that knows."""
        import torch

        check_room(self, inputs["input_ids"].shape[1], max_new_tokens)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                      do_sample=False)
        out = getattr(out, "sequences", out)
        return out[:, 1:] if self.is_encoder_decoder else out[:, inputs["input_ids"].shape[1]:]

    # ---- prompting and batching ------------------------------------------------------------------------------
    def prompt(self, instruction: str = DEFAULT_INSTRUCTION) -> str:
        """A single-turn user message (one image, then ``instruction``) with the generation prompt added: the
        prompt template, the processor's or the tokenizer's chat template, or the family's plain prompt
        (:func:`~mmconcepts.models.prompts.build_prompt`)."""
        from mmconcepts.models.prompts import build_prompt

        return build_prompt(self, instruction)

    def encode(self, images: list, texts: list[str]):
        """Batch images (one per text) and texts: left padded, on the model's device and dtype.

        Parameters
        ----------
        images : list of PIL.Image.Image or path
            One image per text; converted to RGB and nested per prompt (``[[img], [img], ...]``).
        texts : list of str
            Prompts, each with exactly one image placeholder (see :meth:`prompt`).

        Returns
        -------
        dict of tensors (:func:`encode_inputs` moved by :meth:`to_device`)
        """
        return self.to_device(encode_inputs(self.processor, images, texts))

    def to_device(self, inputs: dict) -> dict:
        """Processor outputs on the model's device; floating tensors in its dtype (non-blocking from pinned
        memory)."""
        import torch

        device, dtype = self.device, self.dtype
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, dtype=dtype, non_blocking=True) if value.is_floating_point() else \
                    value.to(device, non_blocking=True)
            moved[key] = value
        return moved

    def caption(self, images: list, instruction: str = DEFAULT_INSTRUCTION, max_new_tokens: int = 50,
                min_new_tokens: int = 0, batch_size: int = 32, progress: bool = False) -> list[str]:
        """Greedy captions of images, ``batch_size`` at a time (the generation loop
        :func:`~mmconcepts.models.generation.generate_ids`, decoded: special tokens skipped, stripped): the one
        captioner of every stage (explanations, caption scoring, baselines, toy training)."""
        from mmconcepts.models.generation import decode, generate_ids

        return decode(self, generate_ids(self, images, self.prompt(instruction), max_new_tokens=max_new_tokens,
                                         min_new_tokens=min_new_tokens, batch_size=batch_size, progress=progress))

    # ---- description -------------------------------------------------------------------------------------------
    def _module_path(self, module) -> str:
        for name, candidate in self.model.named_modules():
            if candidate is module:
                return name
        return "?"

    def info(self) -> dict:
        """A JSON-able description: ids, architecture, sizes, dtype, device and layer names/paths (``image_layers``:
        the image side's, read with ``--positions image``; ``None`` when none is found)."""
        from mmconcepts.models.vision_parts import valid_vision_layers

        n = self.num_layers
        config = self.model.config
        return {
            "model_id": self.model_id,
            "family": self.family,
            "model_type": getattr(config, "model_type", ""),
            "architecture": type(self.model).__name__,
            "num_layers": n,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "tokenizer_size": len(self.tokenizer),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "layers": self._valid_layers(image_side=False),
            "image_layers": valid_vision_layers(self.model) or None,
            "first_layer": "0",
            "last_layer": str(n - 1),
            "norm_layer": "norm",
            "decoder_layers": f"{self._module_path(self.decoder_layers())}.0..{n - 1}",
            "final_norm": self._module_path(self.final_norm()),
            "lm_head": self._module_path(self.lm_head()),
        }
