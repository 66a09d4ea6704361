"""Trace: a word concept's activation attributed to the image-token concepts of an earlier layer.

A word concept (a dictionary learnt on ``--positions token`` states at layer ``Lw``) is active at the state
``z`` from which the model predicts the word; an image-token dictionary (learnt on ``--positions image``
states at layer ``Li``, strictly before ``Lw``) reads the image tokens' states ``H`` (``P x D``) at ``Li``.
The trace is gradient x activation in concept space: with ``a_w`` the word concept's activation at ``z``
(:func:`~mmconcepts.attribution.readout.activation_of`, exact for every dictionary kind), ``G = d a_w / d H``
(through the decoder layers between ``Li`` and ``Lw``), ``A = encode(H)`` (``P x J``) and ``u_j`` the image
concepts' directions,

- the contribution of image concept ``j`` on patch ``p`` is ``A[p, j] * (G[p] . u_j)``; summed over the
  patches, the concept's contribution;
- the residual ``sum_p G[p] . (H[p] - sum_j A[p, j] u_j)`` is what the image dictionary does not explain
  ("unexplained");
- contributions and residual add up to the gradient x input total ``sum_p G[p] . H[p]`` (for a model linear in
  ``H`` without bias, the word concept's activation itself: ``tests/attribution/test_trace.py``).

:func:`trace_states` is the core, for any differentiable ``f(H) -> a_w``; :func:`trace_images` runs it on the
model: every image read the way the word store read its images (:mod:`~.inputs`), one forward pass per batch
in which the image tokens' states at ``Li`` are replaced by leaf tensors (through
:class:`~mmconcepts.models.hooks.Hooks`) and the pass stops after ``Lw``, then one backward pass per word concept.
The second pair, image-token concepts traced to the vision tower's concepts, is
:mod:`~mmconcepts.attribution.vision_trace`'s (:func:`check_pair` tells the two apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmconcepts.errors import MMConceptsError
from mmconcepts.params import Interval, param, validate

__all__ = ["ImageTrace", "StateTrace", "TraceSettings", "check_pair", "layer_rank", "trace_images",
           "trace_leaves", "trace_states"]


@dataclass(frozen=True)
class TraceSettings:
    """How ``mmconcepts trace`` chooses and reads its images.

    Parameters
    ----------
    n_images : images traced (those whose reading holds the word of interest; the dataset is read in order
        until this many are found).
    batch_size : images per forward pass (and per ``generate`` call).
    top : image concepts shown per word concept in ``trace.md``.
    n_top_patches : ShapesWorld: top patches whose objects give an image concept's value (the agreement).
    """

    n_images: int = param(20, constraint=Interval(int, 1), help="images to trace (holding the word of interest)")
    batch_size: int = param(8, constraint=Interval(int, 1), help="images per forward pass")
    top: int = param(3, constraint=Interval(int, 1), help="image concepts shown per word concept in trace.md")
    n_top_patches: int = param(20, constraint=Interval(int, 1),
                               help="ShapesWorld: top patches whose objects give an image concept's value")

    def __post_init__(self):
        validate(self)


@dataclass
class StateTrace:
    """The trace of one image's states: ``K`` word concepts (or outputs of ``f``) over ``J`` image concepts.

    Attributes
    ----------
    activation : (K,) numpy array
        ``f(H)``: each word concept's activation.
    total : (K,) numpy array
        ``sum_p G[p] . H[p]``, gradient x input over the image tokens.
    contributions : (K, J) numpy array
        ``sum_p A[p, j] (G[p] . u_j)``.
    residual : (K,) numpy array
        ``sum_p G[p] . (H[p] - sum_j A[p, j] u_j)``; ``contributions.sum(1) + residual == total``.
    patches : (K, P, J) numpy array
        ``A[p, j] (G[p] . u_j)``: every concept's map over the patches.
    """

    activation: object
    total: object
    contributions: object
    residual: object
    patches: object


@dataclass
class ImageTrace:
    """One image traced: its reading, its patches' boxes and (when the reading holds the word) its trace."""

    image: str
    caption: str
    found: bool
    boxes: list = field(default_factory=list)
    trace: StateTrace | None = None


def trace_leaves(leaves: list, outputs, encode, directions) -> list[StateTrace]:
    """The trace of ``outputs`` (``B x K``; row ``b`` a function of ``leaves[b]`` only) over the leaf states
    ``leaves`` (``P_b x D`` tensors requiring grad): one backward pass per column (module docstring).

    ``encode(H) -> A`` (``P x J``) and ``directions`` (``J x D``) are the image dictionary's.
    """
    import torch

    K = int(outputs.shape[1])
    grads = [[None] * K for _ in leaves]
    for k in range(K):
        column = outputs[:, k].sum()
        found = torch.autograd.grad(column, leaves, retain_graph=k < K - 1, allow_unused=True) \
            if column.requires_grad else [None] * len(leaves)
        for b, g in enumerate(found):
            grads[b][k] = torch.zeros_like(leaves[b]) if g is None else g
    U = directions.detach().to(leaves[0].device, torch.float64)
    out = []
    for b, leaf in enumerate(leaves):
        Z = leaf.detach()
        Z = Z.float() if Z.dtype in (torch.float16, torch.bfloat16) else Z   # the dictionary reads the leaf's dtype
        with torch.no_grad():
            A = torch.as_tensor(encode(Z)).to(Z.device, torch.float64)   # P x J
        H = Z.double()
        G = torch.stack(grads[b]).double()                               # K x P x D
        patches = A[None] * (G @ U.T)                                    # K x P x J
        residual = torch.einsum("kpd,pd->k", G, H - A @ U)
        total = torch.einsum("kpd,pd->k", G, H)
        out.append(StateTrace(outputs[b].detach().double().cpu().numpy(), total.cpu().numpy(),
                              patches.sum(1).cpu().numpy(), residual.cpu().numpy(), patches.cpu().numpy()))
    return out


def trace_states(f, states: list, encode, directions) -> list[StateTrace]:
    """The trace of ``f`` at ``states``: ``f(leaves) -> (B, K)`` with row ``b`` a differentiable function of
    ``leaves[b]`` (``P_b x D``) only, ``encode`` / ``directions`` the image dictionary's (module docstring).

    Examples
    --------
    A linear ``f`` over two patches and an image dictionary of two directions that explains the states: the
    contributions add up to ``f`` itself and nothing is left unexplained.

    >>> import torch
    >>> U = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> H = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    >>> w = torch.tensor([[1.0, 1.0], [0.5, 2.0]])
    >>> (t,) = trace_states(lambda leaves: (leaves[0] * w).sum().reshape(1, 1), [H], lambda Z: Z @ U.T, U)
    >>> t.contributions.tolist(), t.residual.tolist(), t.activation.tolist()
    ([[2.0, 6.0]], [0.0], [8.0])
    """
    import torch

    leaves = [torch.as_tensor(s).detach().clone().requires_grad_(True) for s in states]
    with torch.enable_grad():
        outputs = f(leaves)
    return trace_leaves(leaves, outputs, encode, directions)


def layer_rank(layer: str, num_layers: int) -> int:
    """Where a canonical layer name sits in the forward pass: ``"3"`` -> 3, ``"norm"`` after every layer."""
    return int(num_layers) if str(layer) == "norm" else int(layer)


def check_pair(word, image) -> str:
    """The kind of pair ``trace`` follows, ``"word->image"`` or ``"image->vision"``; anything else refused with
    one line. Word concepts (a ``--positions token`` store) go with image-token concepts of the same model and
    width at a decoder layer strictly before theirs; image-token concepts (``--positions image``, a decoder layer
    or the projector) with vision concepts (``--positions image`` at ``vision.I``) of the same model
    (:func:`~mmconcepts.attribution.vision_trace.check_vision_pair`). The order: every vision layer, then the
    projector, then decoder layer 0, ..., ``norm``."""
    for concepts, flag in ((word, "--concepts"), (image, "--through")):
        if not concepts.manifest:
            raise MMConceptsError(f"{flag} {concepts.path}: its feature store is gone, so trace cannot tell how it "
                                  "read its images; keep the store beside the concepts folder")
    wp, ip = word.positions, image.positions
    if wp == "image":
        from mmconcepts.attribution.vision_trace import check_vision_pair

        check_vision_pair(word, image)
        return "image->vision"
    if wp != "token":
        raise MMConceptsError(f"--concepts {word.path} was learnt on a --positions {wp} store; trace follows word "
                              "concepts (a --positions token store) or image-token concepts (--positions image)")
    if ip != "image":
        raise MMConceptsError(f"--through {image.path} was learnt on a --positions {ip} store; trace needs image "
                              "concepts learnt on a --positions image store (mmconcepts extract --positions image)")
    from mmconcepts.models.vision_parts import is_vision_layer

    for concepts, flag in ((word, "--concepts"), (image, "--through")):
        if is_vision_layer(str(concepts.summary["layer"])):
            raise MMConceptsError(f"{flag} {concepts.path} is at layer {concepts.summary['layer']}, on the image side; "
                                  "word concepts are traced to image-token concepts at a decoder layer (trace "
                                  "image-token concepts through vision concepts)")
    ws, ims = word.summary, image.summary
    if ws.get("model") != ims.get("model") or int(ws["hidden_size"]) != int(ims["hidden_size"]):
        raise MMConceptsError(f"--concepts is of {ws.get('model')} (width {ws['hidden_size']}) but --through of "
                              f"{ims.get('model')} (width {ims['hidden_size']}); learn both on stores of one model")
    n = int((word.manifest or {}).get("num_layers") or (image.manifest or {}).get("num_layers") or 10 ** 6)
    if layer_rank(ims["layer"], n) >= layer_rank(ws["layer"], n):
        raise MMConceptsError(f"the image concepts are at layer {ims['layer']}, not before the word concepts' layer "
                              f"{ws['layer']}; learn the image concepts at an earlier layer (norm is after every "
                              "layer)")
    return "word->image"


def _spliced_pass(adapter, word, inputs, positions, image_layer: str, word_layer: str):
    """One forward pass with the image tokens' states at ``image_layer`` replaced by leaves: ``(leaves, B x K
    activations of every word concept at the last position of word_layer)``."""
    import torch

    from mmconcepts.attribution.readout import activations_of

    leaves, kept = [], []

    def splice(hidden, call):
        new = hidden.detach().clone()
        for b, p in enumerate(positions):
            leaf = hidden[b, p.to(hidden.device)].detach().clone().requires_grad_(True)
            leaves.append(leaf)
            new[b, p.to(hidden.device)] = leaf
        return new

    hooks = adapter.hooks().intervene(image_layer, splice).record(word_layer, lambda h, call: kept.append(h))
    hooks.stop_after(word_layer)
    with hooks, torch.enable_grad():
        hooks.forward(inputs, use_cache=False)
        if not kept or len(leaves) != len(positions):
            raise MMConceptsError(f"cannot read layers {image_layer} and {word_layer} of '{adapter.model_id}' in "
                                  "one forward pass; trace needs a decoder that runs them in order")
        outputs = activations_of(word, kept[0][:, -1, :].float())  # B x K
    return leaves, outputs


def trace_readings(adapter, word, image, readings: list, prompt: str, batch_size: int = 8) -> list[ImageTrace]:
    """Trace the readings (:func:`~.inputs.read_images`) that hold the word, ``batch_size`` per pass; a
    reading without it gives an :class:`ImageTrace` with ``found=False``."""
    from mmconcepts.attribution.inputs import batch_inputs
    from mmconcepts.extract.image_rows import image_positions
    from mmconcepts.models.patches import patch_layout

    word_layer = adapter.resolve_layer(word.summary["layer"])
    image_layer = adapter.resolve_layer(image.summary["layer"])
    out = [ImageTrace(getattr(r.image, "filename", "") or "", r.caption, r.found) for r in readings]
    todo = [i for i, r in enumerate(readings) if r.found]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        rows = [readings[i] for i in chunk]
        inputs = batch_inputs(adapter, rows, prompt)
        layouts = [patch_layout(adapter, r.image.size) for r in rows]
        positions = image_positions(adapter, inputs["input_ids"], layouts)
        leaves, outputs = _spliced_pass(adapter, word, inputs, positions, image_layer, word_layer)
        traces = trace_leaves(leaves, outputs, image.encode, image.directions)
        for i, layout, t in zip(chunk, layouts, traces):
            out[i].boxes = [[round(float(v), 3) for v in box] for box in layout.token_boxes()]
            out[i].trace = t
    return out


def trace_images(word, image, images: list, model=None, *, settings: TraceSettings | None = None,
                 captions: list | None = None) -> list[ImageTrace]:
    """Trace the word concepts of ``word`` through the image concepts of ``image`` on ``settings.n_images``
    of ``images`` whose reading holds the word of interest.

    Parameters
    ----------
    word, image : ConceptSet
        The word concepts (``--positions token``) and the image-token concepts (``--positions image``) at an
        earlier layer (:func:`check_pair`); or image-token concepts and vision concepts, traced by
        :func:`~mmconcepts.attribution.vision_trace.trace_vision_images` (``captions`` unused).
    images : list of path
        Candidate images, read in order until ``n_images`` hold the word.
    model : ModelAdapter, ModelOptions, id or None
        The model (unset options follow the word store's run record).
    captions : list of (list of str) or None
        Teacher mode (when the word store read reference captions): each image's captions, the first holding
        the word is read; ``None`` reads the model's own caption (generate mode).

    Returns
    -------
    list of ImageTrace
        The traced images (each ``found``), in the order of ``images``.
    """
    from mmconcepts.attribution.inputs import read_images
    from mmconcepts.concepts.concept_set import model_for
    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.extract.token_match import WordMatcher

    settings = settings or TraceSettings()
    if check_pair(word, image) == "image->vision":
        from mmconcepts.attribution.vision_trace import trace_vision_images

        return trace_vision_images(word, image, images, model, settings=settings)
    adapter = model_for(word, model)
    reading = store_reading(word.manifest, word.token)
    prompt = adapter.prompt(reading["instruction"])
    mode = "generate" if captions is None else "teacher"
    if captions is not None:
        matcher = WordMatcher(reading["token"], reading["also"])
        chosen = [next((c for c in cs if matcher.find(c)), None) for cs in captions]
        keep = [i for i, c in enumerate(chosen) if c is not None]
        images, captions = [images[i] for i in keep], [chosen[i] for i in keep]
    traced: list[ImageTrace] = []
    step = settings.batch_size
    for start in range(0, len(images), step):
        paths = images[start:start + step]
        pils = [load_image(p) for p in paths]
        readings = read_images(adapter, pils, reading, mode=mode, batch_size=step,
                               captions=None if captions is None else captions[start:start + step])
        for path, t in zip(paths, trace_readings(adapter, word, image, readings, prompt, step)):
            if t.found:
                t.image = str(path)
                traced.append(t)
        if len(traced) >= settings.n_images:
            break
    if not traced:
        raise MMConceptsError(f"none of the {len(images)} images' readings holds the word {reading['token']!r}; "
                              "give images the model captions with it (--images DATASET, --image IMG)")
    return traced[:settings.n_images]
