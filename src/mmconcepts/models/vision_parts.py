"""The layers before the language model: the vision encoder's layers and the projector's output.

Besides the decoder's layers (``"0"`` .. ``"N-1"``, ``"norm"``), a model's image side is addressable for
``extract --positions image``: ``"vision.I"`` is the output of the vision encoder's layer ``I`` (negative
allowed, as for the decoder) and ``"projector"`` the output of the module that maps the vision features to
the language model's width (the image tokens' input embeddings). transformers keeps them under a few names
(:data:`VISION_TOWERS`, :data:`PROJECTORS`, :data:`LAYER_LISTS`); a model without them has no such layers.

A row of these layers is one image token as for the decoder: a vision layer's positions are its patches (a
class token in front is left out), which must be as many as the prompt's image tokens; the reading itself is
:class:`~mmconcepts.extract.recorders.PrefillRecorder`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmconcepts.errors import MMConceptsError

if TYPE_CHECKING:
    import torch

__all__ = ["PROJECTOR", "VISION_PREFIX", "check_decoder_layer", "feature_layer", "image_side_starts", "image_side_width", "is_vision_layer", "projector", "resolve_vision_layer",
           "vision_layers", "vision_module"]

#: Where transformers' VLMs keep the vision encoder (on the model or its inner ``model``).
VISION_TOWERS = ("vision_tower", "vision_model", "visual")
#: Where they keep the projector from the vision features to the language model's width.
PROJECTORS = ("multi_modal_projector", "connector", "mm_projector")
#: Where a vision encoder keeps its layers (dotted paths from the encoder).
LAYER_LISTS = ("encoder.layers", "vision_model.encoder.layers", "encoder.layer", "blocks", "layers")
VISION_PREFIX = "vision."
PROJECTOR = "projector"


def _part(model, names: tuple[str, ...]):
    import torch

    for owner in (getattr(model, "model", None), model):
        for name in names:
            found = getattr(owner, name, None) if owner is not None else None
            if isinstance(found, torch.nn.Module):
                return found
    return None


def _path(module, dotted: str):
    for name in dotted.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def vision_layers(model) -> "torch.nn.ModuleList | None":
    """The vision encoder's layers, in order, or ``None`` when the model has none found."""
    import torch

    tower = _part(model, VISION_TOWERS)
    if tower is None:
        return None
    for dotted in LAYER_LISTS:
        found = _path(tower, dotted)
        if isinstance(found, torch.nn.ModuleList) and len(found):
            return found
    return None


def projector(model) -> "torch.nn.Module | None":
    """The projector from the vision features to the language model, or ``None``."""
    return _part(model, PROJECTORS)


def feature_layer(model) -> int | None:
    """The vision layer whose output the projector reads (``config.vision_feature_layer``, absolute), or ``None``
    when the config does not say (one layer; a list of layers is read as unknown). transformers records that
    layer's output with hooks of its own that run before ours, so an edit of it must go into the projector's
    input instead (:class:`~mmconcepts.models.patch_edit.PatchIntervention`, the vision trace)."""
    index = getattr(model.config, "vision_feature_layer", None)
    layers = vision_layers(model)
    if not isinstance(index, int) or layers is None:
        return None
    n = len(layers)  # hidden_states[0] is the embeddings, hidden_states[i + 1] layer i's output
    return index % (n + 1) - 1


def image_side_starts(hidden, counts: list[int], name: str, advice: str) -> list[int]:
    """Where each sequence's image-token patches start in an image-side layer's states ``hidden`` (``B x T x D``,
    one sequence per image: its last ``counts[b]`` positions, a class token in front left out); a one-line error
    ending in ``advice`` where they do not line up with the prompts' image tokens."""
    T = hidden.shape[1]
    if hidden.shape[0] != len(counts) or any(not n <= T <= n + 1 for n in counts):
        raise MMConceptsError(f"layer {name} holds {hidden.shape[0]} sequences of {T} positions for {len(counts)} "
                              f"prompts of {', '.join(map(str, sorted(set(counts))))} image tokens: its states do not "
                              f"map one to one onto the image tokens; {advice}")
    return [T - n for n in counts]


def is_vision_layer(name: str) -> bool:
    """Whether a canonical layer name is on the image side (``"vision.I"`` or ``"projector"``)."""
    return str(name).startswith(VISION_PREFIX) or str(name) == PROJECTOR


def check_decoder_layer(name: str, what: str) -> None:
    """A one-line error when ``what`` (e.g. ``"steering"``) is asked at an image-side layer: the interventions,
    splices and maps edit or read the decoder's positions, which those layers do not have."""
    if is_vision_layer(str(name)):
        raise MMConceptsError(f"layer {name} is on the image side, and {what} needs a decoder layer; learn the "
                              "concepts at a decoder layer (0, 1, ..., norm)")


def valid_vision_layers(model) -> str:
    """The image-side layer names a model has, for an error message (``""`` when none)."""
    names = []
    layers = vision_layers(model)
    if layers is not None:
        names.append(f"{VISION_PREFIX}0..{VISION_PREFIX}{len(layers) - 1}")
    if projector(model) is not None:
        names.append(PROJECTOR)
    return ", ".join(names)


def resolve_vision_layer(model, text: str, model_id: str) -> str | None:
    """The canonical name of an image-side layer spec (``"vision.-1"`` -> ``"vision.3"``), ``None`` when
    ``text`` names no image-side layer; a one-line error when it names one this model lacks."""
    lowered = text.strip().lower()
    if lowered == PROJECTOR:
        if projector(model) is None:
            raise MMConceptsError(f"'{model_id}' has no projector found under {', '.join(PROJECTORS)}; read a "
                                  "decoder layer or a vision layer")
        return PROJECTOR
    if not lowered.startswith(VISION_PREFIX):
        return None
    layers = vision_layers(model)
    if layers is None:
        raise MMConceptsError(f"'{model_id}' has no vision encoder layers found under {', '.join(VISION_TOWERS)}; "
                              "read a decoder layer")
    n = len(layers)
    try:
        index = int(lowered[len(VISION_PREFIX):])
    except ValueError:
        index = None
    if index is None or not -n <= index < n:
        raise MMConceptsError(f"unknown layer {text!r} for '{model_id}': its vision layers are "
                              f"{VISION_PREFIX}0..{VISION_PREFIX}{n - 1} (or -{n}..-1)")
    return f"{VISION_PREFIX}{index % n}"


def image_side_width(model, name: str, hidden_size: int) -> int:
    """The width of an image-side layer's states: the projector's is the language model's (``hidden_size``),
    a vision layer's the vision encoder's (its config's ``hidden_size``, else its last norm's width)."""
    import torch

    if name == PROJECTOR:
        return int(hidden_size)
    vision = getattr(model.config, "vision_config", None)
    width = getattr(vision, "hidden_size", None) or getattr(vision, "embed_dim", None)
    if isinstance(width, int):
        return width
    norms = [m for m in vision_module(model, name).modules() if isinstance(m, torch.nn.LayerNorm)]
    if norms:
        return int(norms[-1].normalized_shape[-1])
    raise MMConceptsError(f"cannot tell the width of layer {name} of {type(model).__name__}; read a decoder layer")


def vision_module(model, name: str) -> "torch.nn.Module":
    """The module to hook for a canonical image-side layer name."""
    return projector(model) if name == PROJECTOR else vision_layers(model)[int(name[len(VISION_PREFIX):])]
