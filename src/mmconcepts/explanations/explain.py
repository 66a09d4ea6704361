"""Local explanations: which concepts a model uses when it says the token of interest about one image.

The model captions the image (or reads ``caption`` in teacher mode); the hidden state from which the word
was predicted is encoded with the fixed dictionary (non-negative codes), and the most activated concepts are
returned with their words and most activating images (:func:`explain` shows one).
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.data.readers import Sample, load_image
from mmconcepts.errors import MMConceptsError, check_count


def top_concepts(activations, concepts, top: int = 3) -> list[dict]:
    """The ``top`` most activated concepts of one activation vector, with their words and images (each the
    original, or the thumbnail the concepts folder carries when the original is not on this machine)."""
    from mmconcepts.concepts.images import shown_image

    values, indices = activations.float().topk(min(top, activations.shape[-1]))
    return [{"index": int(k), "activation": round(float(v), 5), "words": concepts.words(int(k)),
             "images": [shown_image(im) for im in concepts.images(int(k))]}
            for v, k in zip(values.tolist(), indices.tolist())]


def image_top_concepts(activations, meta_rows: list[dict], concepts, top: int = 3) -> list[dict]:
    """The ``top`` concepts of one image from its patch rows (``activations``, ``P x K``, and their metadata, of
    an image-token store): ranked by the patches' activations pooled as the folder says, each with its map, its
    own activation per patch (:func:`~mmconcepts.concepts.pooling.patch_grid`)."""
    from mmconcepts.concepts.pooling import patch_grid, pooled_activations

    pooled = pooled_activations(activations, [list(range(len(meta_rows)))], concepts.pool)[0]
    tops = top_concepts(pooled, concepts, top)
    for concept in tops:
        concept["heatmap"] = patch_grid(activations[:, concept["index"]].tolist(), meta_rows)
    return tops


def explain(concepts, image, model=None, mode: str = "generate", caption: str | None = None, top: int = 3,
            max_new_tokens: int | None = None, heatmaps: str | None = None) -> dict:
    """Explain one image: ``{"token_found", "caption", "token", "concepts": [{"index", "activation", "words",
    "images"}, ...]}`` with the ``top`` concepts by activation.

    Parameters
    ----------
    concepts : a concepts folder (or a loaded :class:`~mmconcepts.concepts.concept_set.ConceptSet`).
    image : path of the image to explain.
    model : a loaded adapter, :class:`~mmconcepts.models.ModelOptions` or a model id; ``None`` (or every
        option left unset): the model, dtype and placement the features were extracted with.
    mode : ``"generate"`` (the model's own caption) or ``"teacher"`` (read ``caption``).
    max_new_tokens : caption length; ``None``: the training store's. The instruction and the ``also``
        words are always the store's, so the image is read the way the training images were.
    heatmaps : a concept-map method (:data:`~mmconcepts.attribution.METHODS`) or ``None``: each concept
        gets ``"heatmap": {"method", "grid", "box"}``, its map over the image (rows top to bottom; ``box`` the
        region of the image, in its pixels, that the grid covers; :mod:`mmconcepts.attribution`). Concepts
        learnt on image tokens (``extract --positions image``) explain the image by their patches' activations
        pooled as the folder says (``learn --pool``: max by default, or mean) and always carry their map: their own activation per patch (method ``"activation"``, no
        gradient), whatever ``heatmaps`` says.

    Examples
    --------
    Eight concepts of "circle" learnt on 160 ShapesWorld images, then a new image explained:

    >>> from mmconcepts.concepts import ground
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> from mmconcepts.decompose import learn
    >>> from mmconcepts.extract import extract
    >>> for split, n in (("train", 160), ("test", 4)):
    ...     _ = write_dataset(f"shapes/{split}", n=n, seed=0, split=split)
    >>> _ = extract("shapes/train", "circle", out="runs/circle", layers=["norm"], mode="teacher", progress=False)
    >>> _ = learn("runs/circle", "norm", out="runs/concepts", n_concepts=8, seed=0)
    >>> _ = ground("runs/concepts")
    >>> result = explain("runs/concepts", "shapes/test/images/000003.png")
    >>> result["caption"]
    'one circle of little size on the left in red'
    >>> [(c["index"], round(c["activation"], 1), c["words"]) for c in result["concepts"]]
    [(3, 9.2, ['left']), (7, 7.9, ['red']), (4, 0.7, ['bottom'])]
    """
    import torch

    from mmconcepts.extract.extraction import represent, store_reading
    from mmconcepts.extract.store import read_manifest
    from mmconcepts.concepts.concept_set import ConceptSet, load_concepts, model_for

    if mode == "teacher" and not caption:
        raise MMConceptsError("--mode teacher needs --caption \"...\" holding the token of interest")
    check_count("top (--top)", top, 1)
    check_count("max_new_tokens (--max-new-tokens)", max_new_tokens, 1, optional=True)
    map_settings = None
    if heatmaps is not None:
        from mmconcepts.attribution import MapSettings

        map_settings = MapSettings(heatmaps)
    concepts = concepts if isinstance(concepts, ConceptSet) else load_concepts(concepts, require_grounding=True)
    summary = concepts.summary
    pil = load_image(image)
    # the store's run record, or the part of it grounding.json keeps when the folder travelled without it
    reading = store_reading(concepts.manifest or read_manifest(concepts.features), concepts.token)
    if max_new_tokens is not None:
        reading["max_new_tokens"] = max_new_tokens
    model = model_for(concepts, model)
    sample = Sample(id=Path(image).stem, image=Path(image).resolve(), captions=[caption] if caption else [])
    features, meta, _ = represent(model, [sample], [pil], layers=[summary["layer"]], mode=mode, keep="generated",
                                  **reading)
    result = {"image": str(Path(image)), "token": summary["token"], "layer": summary["layer"]}
    if not meta:
        generated = model.caption([pil], instruction=reading["instruction"],
                                  max_new_tokens=reading["max_new_tokens"])[0] if mode == "generate" else caption
        return {**result, "token_found": False, "caption": generated, "concepts": []}
    z = features[model.resolve_layer(summary["layer"])]
    with torch.no_grad():
        activations = concepts.encode(z)
    if reading["positions"] == "image":  # patches: pooled for the image, each concept's map its own activation
        tops = image_top_concepts(activations, meta, concepts, top)
    else:
        tops = top_concepts(activations[0], concepts, top)
        if map_settings is not None:
            _add_heatmaps(tops, concepts, model, pil, reading, mode, meta[0], map_settings)
    return {**result, "token_found": True, "caption": meta[0]["caption"], "concepts": tops}


def _add_heatmaps(tops: list[dict], concepts, model, pil, reading: dict, mode: str, row: dict, settings) -> None:
    """Each top concept's map over the image, as ``"heatmap"``, the image read as ``row`` (the metadata row of
    its reading above) says (``None`` if that reading misses the token)."""
    from mmconcepts.attribution import maps_of_readings, read_rows

    readings = read_rows(model, [pil], [row], reading, mode=mode)
    maps = maps_of_readings(model, concepts, readings, [(0, c["index"]) for c in tops], settings,
                            model.prompt(reading["instruction"]))
    for concept, m in zip(tops, maps):
        concept["heatmap"] = m.to_json() if m is not None else None


def _peak(heatmap: dict) -> str:
    """Where a map peaks, in the image's pixels: the centre of its largest cell."""
    grid, (x0, y0, x1, y1) = heatmap["grid"], heatmap["box"]
    rows, cols = len(grid), len(grid[0])
    r, c = max(((i, j) for i in range(rows) for j in range(cols)), key=lambda ij: grid[ij[0]][ij[1]])
    x, y = x0 + (c + 0.5) * (x1 - x0) / cols, y0 + (r + 0.5) * (y1 - y0) / rows
    return f"peak at x={x:.0f}, y={y:.0f} (cell {r}, {c} of {rows} x {cols})"


def format_explanation(result: dict) -> str:
    """A short human-readable rendering of :func:`explain`'s result."""
    lines = [f"caption: {result['caption']}"]
    if not result["token_found"]:
        lines.append(f"the token '{result['token']}' was not generated for this image; explain the reading of a "
                     f"caption instead with --mode teacher --caption \"...{result['token']}...\"")
        return "\n".join(lines)
    for c in result["concepts"]:
        lines.append(f"concept {c['index']:>3}  activation {c['activation']:.3f}  words: {', '.join(c['words'][:6])}")
        if c.get("heatmap"):
            lines.append(f"             map ({c['heatmap']['method']}): {_peak(c['heatmap'])}")
        for image in c["images"][:3]:
            lines.append(f"             {image}")
    return "\n".join(lines)
