"""Trace, second pair: an image-token concept's activation attributed to the vision tower's concepts.

The image-token concepts (a dictionary learnt on ``--positions image`` states at a decoder layer ``L`` or at
``"projector"``) read every image token's state ``H_L[p]``; the vision concepts (learnt on a ``--positions image``
store at a vision layer ``vision.I``, the vision encoder's own width, no words) read the tower's patch states
``H[p]`` there (the class token left out, as extraction read them). The target of image-token concept ``k`` on an
image is its activation summed over the image's tokens, ``sum_p a_k(H_L[p])``
(:func:`~mmconcepts.attribution.readout.activations_of`, exact for every dictionary kind); the trace is the one
of :mod:`~mmconcepts.attribution.trace` (:func:`~mmconcepts.attribution.trace.trace_leaves`), with ``G`` the
gradient of that sum through the rest of the tower, the projector and the decoder up to ``L``: contributions of
the vision concepts (``K x J``), the residual and the per-patch maps, adding up to ``sum_p G[p] . H[p]``.

Each image is read as the image-token store read it: one pass of the store's prompt (the image tokens precede
the caption, so in generate mode too the caption changes nothing), no generation; every image given is traced,
whether or not its caption would hold the store's word. The patch states at ``vision.I`` are replaced by leaf
tensors through :class:`~mmconcepts.models.hooks.Hooks` and the pass stops after ``L`` (after the projector for
``"projector"``). transformers keeps the vision features the projector reads (``vision_feature_layer``) by hooks
of its own that see a layer's output before ours do, so at that layer the leaves go into the projector's input
instead (the same patch states); a vision layer after it feeds nothing and is refused.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError

__all__ = ["check_vision_pair", "trace_vision_images", "trace_vision_pils"]


def check_vision_pair(image, vision) -> None:
    """Refuse an (image-token concepts, vision concepts) pair the trace cannot follow, with one line: the
    ``--concepts`` folder on a ``--positions image`` store at a decoder layer or the projector, the ``--through``
    folder on a ``--positions image`` store at a vision layer of the same model, its dictionary as wide as that
    store's layer."""
    from mmconcepts.models.vision_parts import PROJECTOR, VISION_PREFIX

    layer, through = str(image.summary["layer"]), str(vision.summary["layer"])
    if layer.startswith(VISION_PREFIX):
        raise MMConceptsError(f"--concepts {image.path} is at layer {layer}, in the vision tower: nothing earlier "
                              "is traced; give image-token concepts at a decoder layer or the projector as --concepts")
    if vision.positions != "image":
        raise MMConceptsError(f"--through {vision.path} was learnt on a --positions {vision.positions} store; with "
                              "image-token --concepts, trace needs vision concepts learnt on a --positions image "
                              "store at a vision layer (vision.I)")
    if not through.startswith(VISION_PREFIX):
        what = "the projector" if through == PROJECTOR else f"decoder layer {through}"
        raise MMConceptsError(f"--through {vision.path} is at {what}; with image-token --concepts, trace needs vision "
                              "concepts learnt at a vision layer (extract --layers vision.I --positions image)")
    im, vm = image.manifest, vision.manifest
    if image.summary.get("model") != vision.summary.get("model") or \
            int(im.get("hidden_size") or -1) != int(vm.get("hidden_size") or -2):
        raise MMConceptsError(f"--concepts is of {image.summary.get('model')} (width {im.get('hidden_size')}) but "
                              f"--through of {vision.summary.get('model')} (width {vm.get('hidden_size')}); learn "
                              "both on stores of one model")
    from mmconcepts.extract.store import layer_width

    width, stored = int(vision.summary["hidden_size"]), layer_width(vm, through)
    known = (im.get("widths") or {}).get(through)
    if width != stored or (known is not None and int(known) != width):
        raise MMConceptsError(f"--through {vision.path} has concepts of width {width} but layer {through} of its "
                              f"model is {known or stored} wide; learn the vision concepts on that model's store")


def _splicer(positions: list, leaves: list, name: str):
    """Replace each sequence's last ``len(positions[b])`` states (its patches; a class token in front stays) by
    leaves, as :class:`~mmconcepts.extract.recorders.PrefillRecorder` reads them."""
    from mmconcepts.models.vision_parts import image_side_starts

    counts = [len(p) for p in positions]

    def splice(hidden, call):
        if call != 0:
            return None
        new = hidden.detach().clone()
        for b, start in enumerate(image_side_starts(hidden, counts, name, "trace cannot splice them")):
            leaf = hidden[b, start:].detach().clone().requires_grad_(True)
            leaves.append(leaf)
            new[b, start:] = leaf
        return new

    return splice


def _vision_pass(adapter, image, inputs, positions: list, vision_layer: str, image_layer: str):
    """One forward pass with the patch states at ``vision_layer`` replaced by leaves: ``(leaves, B x K summed
    activations of every image-token concept at image_layer)``."""
    import torch

    from mmconcepts.attribution.readout import activations_of
    from mmconcepts.models.vision_parts import PROJECTOR, feature_layer

    index, feature = int(vision_layer.split(".")[1]), feature_layer(adapter.model)
    if feature is not None and index > feature:
        raise MMConceptsError(f"the projector of '{adapter.model_id}' reads vision.{feature}, so layer {vision_layer} "
                              f"feeds nothing; learn the vision concepts at vision.{feature} or earlier")
    leaves, kept = [], []
    splice = _splicer(positions, leaves, vision_layer)
    hooks = adapter.hooks()
    hooks = hooks.before(PROJECTOR, splice) if index == feature else hooks.intervene(vision_layer, splice)
    hooks.record(image_layer, lambda h, call: kept.append(h) if call == 0 else None).stop_after(image_layer)
    with hooks, torch.enable_grad():
        hooks.forward(inputs, use_cache=False)
        if not kept or len(leaves) != len(positions):
            raise MMConceptsError(f"cannot read layers {vision_layer} and {image_layer} of '{adapter.model_id}' in one "
                                  "forward pass; trace needs a model that runs its vision tower before the decoder")
        h = kept[0]
        if image_layer == PROJECTOR:
            states = [h[b, h.shape[1] - len(p):] for b, p in enumerate(positions)]
        else:
            states = [h[b, p.to(h.device)] for b, p in enumerate(positions)]
        probe = sum(s.sum() for s in states)
        if not probe.requires_grad or any(g is None for g in torch.autograd.grad(
                probe, leaves, retain_graph=True, allow_unused=True)):
            raise MMConceptsError(f"the states at layer {image_layer} of '{adapter.model_id}' do not depend on "
                                  f"{vision_layer}'s patch states as hooked; trace the vision concepts of an earlier "
                                  "vision layer")
        outputs = torch.stack([activations_of(image, s.float()).sum(0) for s in states])  # B x K, each summed
    return leaves, outputs


def trace_vision_pils(adapter, image, vision, pils: list, prompt: str, batch_size: int = 8) -> list:
    """Trace the image-token concepts of ``image`` through the vision concepts of ``vision`` on the loaded
    images ``pils`` (``batch_size`` per pass): one :class:`~mmconcepts.attribution.trace.ImageTrace` each."""
    from mmconcepts.attribution.trace import ImageTrace, trace_leaves
    from mmconcepts.extract.image_rows import image_positions
    from mmconcepts.models.patches import patch_layout
    from mmconcepts.models.vision_parts import image_side_width

    vision_layer = adapter.resolve_layer(vision.summary["layer"])
    image_layer = adapter.resolve_layer(image.summary["layer"])
    width = image_side_width(adapter.model, vision_layer, adapter.hidden_size)
    if int(vision.directions.shape[1]) != width:
        raise MMConceptsError(f"--through {vision.path} has concepts of width {vision.directions.shape[1]} but layer "
                              f"{vision_layer} of '{adapter.model_id}' is {width} wide; learn the vision concepts on "
                              "this model's store")
    out = []
    for start in range(0, len(pils), batch_size):
        chunk = pils[start:start + batch_size]
        inputs = adapter.encode(chunk, [prompt] * len(chunk))
        layouts = [patch_layout(adapter, im.size) for im in chunk]
        positions = image_positions(adapter, inputs["input_ids"], layouts)
        leaves, outputs = _vision_pass(adapter, image, inputs, positions, vision_layer, image_layer)
        for im, layout, t in zip(chunk, layouts, trace_leaves(leaves, outputs, vision.encode, vision.directions)):
            boxes = [[round(float(v), 3) for v in box] for box in layout.token_boxes()]
            out.append(ImageTrace(getattr(im, "filename", "") or "", "", True, boxes, t))
    return out


def trace_vision_images(image, vision, images: list, model=None, *, settings=None) -> list:
    """Trace the image-token concepts of ``image`` through the vision concepts of ``vision`` on the first
    ``settings.n_images`` of ``images`` (every image given: the prompt pass holds no caption).

    Parameters
    ----------
    image, vision : ConceptSet
        Image-token concepts (``--positions image``, a decoder layer or ``"projector"``) and vision concepts
        (``--positions image`` at ``vision.I``), of one model (:func:`check_vision_pair`).
    images : list of path
        The images, read in order.
    model : ModelAdapter, ModelOptions, id or None
        The model (unset options follow the image-token store's run record).
    settings : TraceSettings

    Returns
    -------
    list of ImageTrace
        Their ``caption`` is empty and ``found`` true; ``trace.activation`` each image-token concept's activation
        summed over the image's tokens.
    """
    from mmconcepts.attribution.trace import TraceSettings
    from mmconcepts.concepts.concept_set import model_for
    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading

    settings = settings or TraceSettings()
    check_vision_pair(image, vision)
    if not images:
        raise MMConceptsError("no image to trace; give --images DATASET or --image IMG")
    adapter = model_for(image, model)
    prompt = adapter.prompt(store_reading(image.manifest, image.token)["instruction"])
    paths = list(images)[:settings.n_images]
    traced = trace_vision_pils(adapter, image, vision, [load_image(p) for p in paths], prompt, settings.batch_size)
    for path, t in zip(paths, traced):
        t.image = str(path)
    return traced
