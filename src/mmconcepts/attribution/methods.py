"""Concept maps: where in the image a concept's activation at the token of interest comes from.

Three methods, each batched over (image, concept) pairs (:class:`MapSettings` says how):

``attribution``
    Gradient x input: the concept's activation at the token's state (:func:`~.readout.activation_of`) is
    differentiated with respect to the decoder's input embeddings (the input of decoder layer 0, where the
    image tokens are the projected image features), and ``gradient * (embedding - reference)`` is summed over
    the hidden dimension at every image token. The reference is the embedding of the *blank* image (every
    pixel the image's median colour: the background of a scene) or zero; the gradient is taken at the input
    (``steps=0``: plain gradient x input with the zero reference) or averaged over ``steps`` midpoints of the
    path from the reference to the input (integrated gradients, midpoint rule); at every point the concept's
    activation is the one linearised at the explained state (:mod:`~.readout`). The default, the blank
    reference and one step (the gradient halfway), costs for a batch of pairs the blank images' embeddings
    (the vision tower and the projector; the pass stops at the decoder), one forward pass at the input and one
    forward and backward pass halfway; every pass stops at the dictionary's layer. Measured on the demo
    (``benchmarks/maps.py``, seeds 0 / 1 / 2): the blank reference keeps the background's embeddings out of
    the map and the gradient halfway is less saturated than at the input, so more of the map falls on the
    object (pointing 0.90 / 0.95 / 0.95 against 0.78 / 0.74 / 0.73 for plain gradient x input).
``occlusion``
    The drop of the concept's activation (the dictionary's own encoder) when one cell of the finest token
    grid is masked *in the original image* (filled with the image's median colour; the mean colour draws a
    new, faint square the toy captioner reads as an object) and the masked image is read again: one batched
    forward pass per image over its ``cells + 1`` copies (the processor sees each copy as it sees any image,
    so the same code serves every family).
``projection``
    The concept's activation read from each image token's own hidden state at the dictionary's layer (the
    dictionary's encoder on those states). One forward pass; no gradient.

Per-token values are placed on the image by the processor's layout
(:func:`~mmconcepts.models.patches.patch_layout`) and returned as a :class:`ConceptMap`: a grid over a box of
the original image, rows top to bottom.
"""

from __future__ import annotations

import warnings

from mmconcepts.errors import MMConceptsError
from mmconcepts.attribution.settings import ConceptMap, MapSettings

__all__ = ["concept_maps", "maps_of_readings"]


#: Cells across and down of the grid occlusion masks for a model whose image tokens have no place on the image.
OCCLUSION_CELLS = 8


class NoImageTokensWarning(UserWarning):
    """The model's image tokens have no place on the image (Q-Former queries, cross-attention, an encoder):
    its maps are made by occlusion over a grid of the image instead of the method asked for."""


class _Capture:
    """What one forward pass gives (:func:`_forward`): the decoder's input (``embeddings``, a leaf tensor when
    gradients are on; ``original``, before any move along the path) and one layer's output (``hidden``)."""

    def __init__(self, base=None, alpha: float = 1.0, mask=None):
        self.base, self.alpha, self.mask = base, alpha, mask
        self.embeddings = self.hidden = self.original = None

    def input(self, hidden, call: int):
        """The decoder input to use: a point on the path from the reference to the input, at the image tokens."""
        import torch

        self.original = hidden.detach()
        if self.alpha != 1.0:
            hidden = hidden - (1.0 - self.alpha) * self.mask * (hidden - (0 if self.base is None else self.base))
        self.embeddings = hidden.detach().requires_grad_(True) if torch.is_grad_enabled() else hidden.detach()
        return self.embeddings

    def output(self, hidden, call: int) -> None:
        self.hidden = hidden


def _forward(adapter, inputs: dict, layer: str, leaf: bool, grad: bool | None = None, base=None,
             alpha: float = 1.0, mask=None) -> _Capture:
    """One forward pass (``use_cache=False``) that stops after ``layer`` (nothing after the dictionary's layer
    is needed: no logits); with ``leaf`` the decoder's input is captured and replaced (:meth:`_Capture.input`)."""
    import torch

    grad = leaf if grad is None else grad
    capture = _Capture(base, alpha, mask)
    hooks = adapter.hooks()
    if leaf:
        hooks.before(0, capture.input)
    hooks.record(layer, capture.output).stop_after(layer)
    with hooks, torch.enable_grad() if grad else torch.no_grad():
        hooks.forward(inputs, use_cache=False)
    return capture


def _decoder_input(adapter, inputs: dict):
    """The decoder's input embeddings of ``inputs``: the vision tower, the projector and the token embeddings
    run; the forward pass stops before decoder layer 0."""
    import torch

    kept = []
    hooks = adapter.hooks().before(0, lambda hidden, call: kept.append(hidden.detach())).stop_before(0)
    with hooks, torch.no_grad():
        hooks.forward(inputs, use_cache=False)
    return kept[0]


def _image_positions(adapter, inputs: dict, layouts) -> list:
    from mmconcepts.models.patches import image_token_id, image_token_positions

    token = image_token_id(adapter, inputs["input_ids"])
    positions = []
    for row, layout in zip(inputs["input_ids"], layouts):
        found = image_token_positions(row, token)
        if found.numel() == 0:
            raise MMConceptsError(f"the prompt of '{adapter.model_id}' holds no image token; concept maps need a "
                                  "model that reads the image as tokens of its prompt")
        if found.numel() != layout.n_tokens:
            raise MMConceptsError(f"the prompt holds {found.numel()} image tokens but the processor's layout "
                                  f"gives {layout.n_tokens}; concept maps cannot place this processor's tokens")
        positions.append(found)
    return positions


def _attribution(adapter, concepts, layer, inputs, ks, layouts, settings, reference=None):
    """Per-token ``gradient x (embedding - reference)`` of the concept's activation linearised at the token's
    state (:func:`~.readout.readout_rows`), the gradient taken at the input (``steps = 0``) or averaged over the
    midpoints of ``steps`` equal segments of the path from the reference to the input."""
    import torch

    from mmconcepts.attribution.readout import readout_rows

    from mmconcepts.models.patches import image_token_id

    base = _decoder_input(adapter, reference) if reference is not None else None
    mask = (inputs["input_ids"] == image_token_id(adapter, inputs["input_ids"]))[..., None].to(adapter.dtype)
    alphas = [1.0] if settings.steps == 0 else [(i + 0.5) / settings.steps for i in range(settings.steps)]
    z_input = w = None
    if alphas != [1.0]:  # the explained state: one forward pass without gradient
        z_input = _forward(adapter, inputs, layer, leaf=False).hidden[:, -1, :].float().clone()
        w = readout_rows(concepts, z_input, ks)
    total = 0
    for alpha in alphas:
        capture = _forward(adapter, inputs, layer, leaf=True, base=base, alpha=alpha, mask=mask)
        if capture.embeddings is None or not capture.embeddings.requires_grad:
            raise MMConceptsError(f"cannot read the decoder input of '{adapter.model_id}' for attribution")
        with torch.enable_grad():
            z = capture.hidden[:, -1, :].float()
            if w is None:  # at the input itself
                z_input = z.detach().clone()
                w = readout_rows(concepts, z_input, ks)
            (grad,) = torch.autograd.grad((w * z).sum(), capture.embeddings)
        total = total + grad / len(alphas)
    delta = mask * (capture.original - (base if base is not None else 0))
    scores = (total * delta).float().sum(-1)
    positions = _image_positions(adapter, inputs, layouts)
    with torch.no_grad():
        activation = concepts.encode(z_input)
    acts = [float(activation[i, int(k)]) for i, k in enumerate(ks)]
    return [scores[i, p].cpu().numpy() for i, p in enumerate(positions)], acts


def _projection(adapter, concepts, layer, inputs, ks, layouts):
    import torch

    capture = _forward(adapter, inputs, layer, leaf=False)
    positions = _image_positions(adapter, inputs, layouts)
    values, acts = [], []
    with torch.inference_mode():
        for i, (p, k) in enumerate(zip(positions, ks)):
            states = torch.cat([capture.hidden[i, p], capture.hidden[i, -1:]]).float()
            A = concepts.encode(states)[:, int(k)]
            values.append(A[:-1].cpu().numpy())
            acts.append(float(A[-1]))
    return values, acts


def _fill(image) -> tuple:
    """The image's per-channel median colour: on a scene of objects on a background, the background."""
    import numpy as np

    return tuple(int(round(v)) for v in np.median(np.asarray(image, dtype=np.float64).reshape(-1, 3), axis=0))


def _masked(image, box, fill):
    from PIL import ImageDraw

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, image.width), min(y1, image.height)
    copy = image.copy()
    if x1 > x0 and y1 > y0:
        ImageDraw.Draw(copy).rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    return copy


def _occlusion(adapter, concepts, layer, reading, ks, layout, prompt, settings):
    """``{k: cells}`` drops and ``{k: activation}`` for one image and the concepts ``ks`` (one batched pass)."""
    import torch

    from mmconcepts.attribution.inputs import TokenReading, batch_inputs

    fill = _fill(reading.image)
    boxes = layout.main.cell_boxes()
    copies = [reading.image] + [_masked(reading.image, b, fill) for b in boxes]
    states = []
    for start in range(0, len(copies), settings.occlusion_batch):
        chunk = [TokenReading(im, reading.prefix, reading.caption)
                 for im in copies[start:start + settings.occlusion_batch]]
        capture = _forward(adapter, batch_inputs(adapter, chunk, prompt), layer, leaf=False)
        states.append(capture.hidden[:, -1, :].float())
    with torch.inference_mode():
        A = concepts.encode(torch.cat(states)).cpu().numpy()
    main = layout.main
    return {k: (A[0, k] - A[1:, k]).reshape(main.rows, main.cols) for k in ks}, {k: float(A[0, k]) for k in ks}


def maps_of_readings(adapter, concepts, readings, pairs, settings: MapSettings, prompt: str) -> list:
    """Maps of ``(reading index, concept)`` pairs: a :class:`ConceptMap`, or ``None`` where the reading lacks the
    token of interest. ``readings`` come from :func:`~.inputs.read_images` with the same ``prompt``."""
    from PIL import Image

    from mmconcepts.attribution.inputs import TokenReading, batch_inputs
    from mmconcepts.models.patches import patch_layout, uniform_layout

    if concepts.positions == "image":
        raise MMConceptsError("concepts learnt on image tokens carry their own map, their activation per patch "
                              "(explain and evaluate draw it); the gradient maps are for word concepts")
    layer = adapter.resolve_layer(concepts.summary["layer"])
    layouts = {}
    todo = [j for j, (i, _) in enumerate(pairs) if readings[i].found]
    uniform = False  # occlusion over a grid of the image: for a model whose image tokens have no place on it
    if settings.method != "occlusion" and todo:
        try:
            patch_layout(adapter, readings[pairs[todo[0]][0]].image.size)
        except MMConceptsError as exc:
            warnings.warn(f"{exc}; the maps are made by occlusion over a {OCCLUSION_CELLS} x {OCCLUSION_CELLS} "
                          "grid of the image", NoImageTokensWarning, stacklevel=2)
            uniform = True

    def layout_of(i):
        if i not in layouts:
            size = readings[i].image.size
            layouts[i] = uniform_layout(size, OCCLUSION_CELLS) if uniform else patch_layout(adapter, size)
        return layouts[i]

    result: list = [None] * len(pairs)
    if settings.method == "occlusion" or uniform:
        by_image: dict = {}
        for j in todo:
            by_image.setdefault(pairs[j][0], []).append(j)
        for i, js in by_image.items():
            ks = sorted({int(pairs[j][1]) for j in js})
            drops, acts = _occlusion(adapter, concepts, layer, readings[i], ks, layout_of(i), prompt, settings)
            main = layout_of(i).main
            for j in js:
                k = int(pairs[j][1])
                result[j] = ConceptMap("occlusion", k, drops[k], main.box, acts[k], readings[i].image.size)
        return result
    run = _attribution if settings.method == "attribution" else _projection
    for start in range(0, len(todo), settings.batch_size):
        chunk = todo[start:start + settings.batch_size]
        rows = [readings[pairs[j][0]] for j in chunk]
        ks = [int(pairs[j][1]) for j in chunk]
        lay = [layout_of(pairs[j][0]) for j in chunk]
        extra = {}
        if settings.method == "attribution" and settings.baseline == "blank":
            blank = [TokenReading(Image.new("RGB", r.image.size, _fill(r.image)), r.prefix, r.caption) for r in rows]
            extra["reference"] = batch_inputs(adapter, blank, prompt)
        if settings.method == "attribution":
            extra["settings"] = settings
        values, acts = run(adapter, concepts, layer, batch_inputs(adapter, rows, prompt), ks, lay, **extra)
        for j, v, a, layout in zip(chunk, values, acts, lay):
            result[j] = ConceptMap(settings.method, int(pairs[j][1]), layout.grid_values(v), layout.main.box, a,
                                   readings[pairs[j][0]].image.size)
    return result


def concept_maps(concepts, images, concept_indices, model=None, *, settings: MapSettings | None = None,
                 mode: str = "generate", captions=None, **fields) -> list:
    """Maps of concepts over images, read the way the concepts' feature store read its images.

    Parameters
    ----------
    concepts : path or ConceptSet
        A concepts folder (``mmconcepts learn``).
    images : list of path or PIL.Image.Image
        The images.
    concept_indices : list
        For each image, the concept (an int) or the concepts (a list of int) to map.
    model : ModelAdapter, ModelOptions, id or None
        The model (unset options follow the store's run record).
    settings : MapSettings, or its fields as keywords (``method="occlusion"``).
    mode, captions : ``"generate"`` (the model's caption) or ``"teacher"`` (one caption per image).

    Returns
    -------
    list of list of (ConceptMap or None)
        For each image, one map per concept asked (``None`` when the caption lacks the token of interest).

    Examples
    --------
    Eight concepts of "circle" learnt on 160 ShapesWorld images (concept 3 reads "left", 7 "red"), mapped over a
    test image of a small red circle on the left:

    >>> from mmconcepts.data import open_dataset
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> from mmconcepts.decompose import learn
    >>> from mmconcepts.evaluation.attribution.map_scores import energy_inside, pointing_hit
    >>> from mmconcepts.extract import extract
    >>> _ = write_dataset("shapes/train", n=160, seed=0)
    >>> _ = extract("shapes/train", "circle", out="runs/circle", layers=["norm"], mode="teacher", progress=False)
    >>> _ = learn("runs/circle", "norm", out="runs/concepts", n_concepts=8, seed=0)
    >>> _ = write_dataset("shapes/test", n=4, seed=0, split="test")
    >>> left, red = concept_maps("runs/concepts", ["shapes/test/images/000003.png"], [[3, 7]])[0]
    >>> red.method, red.grid.shape, red.box       # one value per 8 x 8 pixels of the 64 x 64 image
    ('attribution', (8, 8), (0.0, 0.0, 64.0, 64.0))
    >>> circle = open_dataset("shapes/test")[3].attributes["objects"][0]
    >>> circle["colour"], circle["position"], pointing_hit(red.grid, red.box, circle)
    ('red', 'left', True)
    >>> round(energy_inside(red.grid, red.box, circle), 2)     # the share of the map inside the circle
    0.52
    """
    from PIL import Image

    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.concepts.concept_set import ConceptSet, load_concepts, model_for
    from mmconcepts.interventions.directions import check_concept
    from mmconcepts.attribution.inputs import read_images

    if settings is None:
        settings = MapSettings(**fields)
    elif fields:
        raise MMConceptsError("give the map settings either as settings= or as keywords, not both")
    concepts = concepts if isinstance(concepts, ConceptSet) else load_concepts(concepts)
    if len(concept_indices) != len(images):
        raise MMConceptsError(f"got {len(concept_indices)} concept lists for {len(images)} images")
    wanted = [[ks] if isinstance(ks, int) else list(ks) for ks in concept_indices]
    for ks in wanted:
        for k in ks:
            check_concept(concepts, k)
    pils = [im if isinstance(im, Image.Image) else load_image(im) for im in images]
    adapter = model_for(concepts, model)
    reading = store_reading(concepts.manifest, concepts.token)
    readings = read_images(adapter, pils, reading, mode=mode, captions=captions, batch_size=settings.batch_size)
    pairs = [(i, k) for i, ks in enumerate(wanted) for k in ks]
    flat = maps_of_readings(adapter, concepts, readings, pairs, settings, adapter.prompt(reading["instruction"]))
    out, pos = [], 0
    for ks in wanted:
        out.append(flat[pos:pos + len(ks)])
        pos += len(ks)
    return out
