"""Local explanations: which concepts a model uses when it says the token of interest about one image.

The model captions the image (or reads ``caption`` in teacher mode); the hidden state from which the word
was predicted is encoded with the fixed dictionary (non-negative codes), and the most activated concepts are
returned with their words and most activating images.

Examples
--------
>>> from mmconcepts.grounding import explain                    # doctest: +SKIP
>>> result = explain("runs/concepts", "photo.png")               # doctest: +SKIP
>>> [c["words"][:3] for c in result["concepts"]]                 # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.data.readers import Sample, load_image
from mmconcepts.errors import MMConceptsError


def top_concepts(activations, concepts, top: int = 3) -> list[dict]:
    """The ``top`` most activated concepts of one activation vector, with their words and images."""
    values, indices = activations.float().topk(min(top, activations.shape[-1]))
    return [{"index": int(k), "activation": round(float(v), 5), "words": concepts.words(int(k)),
             "images": [im["image"] for im in concepts.images(int(k))]}
            for v, k in zip(values.tolist(), indices.tolist())]


def explain(concepts, image, model=None, mode: str = "generate", caption: str | None = None, top: int = 3,
            max_new_tokens: int | None = None) -> dict:
    """Explain one image: ``{"token_found", "caption", "token", "concepts": [{"index", "activation", "words",
    "images"}, ...]}`` with the ``top`` concepts by activation.

    Parameters
    ----------
    concepts : a concepts folder (or a loaded :class:`~mmconcepts.grounding.concepts.ConceptSet`).
    image : path of the image to explain.
    model : a loaded adapter, :class:`~mmconcepts.models.ModelOptions` or a model id; ``None`` (or every
        option left unset): the model, dtype and placement the features were extracted with.
    mode : ``"generate"`` (the model's own caption) or ``"teacher"`` (read ``caption``).
    max_new_tokens : caption length; ``None``: the training store's. The instruction and the ``also``
        words are always the store's, so the image is read the way the training images were.
    """
    import torch

    from mmconcepts.extract.extraction import represent, store_reading
    from mmconcepts.extract.store import read_manifest
    from mmconcepts.grounding.concepts import ConceptSet, load_concepts, model_for

    if mode == "teacher" and not caption:
        raise MMConceptsError("--mode teacher needs --caption \"...\" holding the token of interest")
    concepts = concepts if isinstance(concepts, ConceptSet) else load_concepts(concepts, require_grounding=True)
    summary = concepts.summary
    pil = load_image(image)
    reading = store_reading(read_manifest(concepts.features), concepts.token)
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
        activations = concepts.encode(z)[0]
    return {**result, "token_found": True, "caption": meta[0]["caption"],
            "concepts": top_concepts(activations, concepts, top)}


def format_explanation(result: dict) -> str:
    """A short human-readable rendering of :func:`explain`'s result."""
    lines = [f"caption: {result['caption']}"]
    if not result["token_found"]:
        lines.append(f"the token '{result['token']}' was not generated for this image; explain the reading of a "
                     f"caption instead with --mode teacher --caption \"...{result['token']}...\"")
        return "\n".join(lines)
    for c in result["concepts"]:
        lines.append(f"concept {c['index']:>3}  activation {c['activation']:.3f}  words: {', '.join(c['words'][:6])}")
        for image in c["images"][:3]:
            lines.append(f"             {image}")
    return "\n".join(lines)
