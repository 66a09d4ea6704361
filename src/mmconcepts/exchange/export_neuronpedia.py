"""A concepts folder written as Neuronpedia's export rows (the JSON Lines its own exports and its importer use,
one object a line; the rows docs/FORMAT.md lists), with the top images referenced and, as an extension, each
activation's image region and concept map.

Neuronpedia keeps a *source* (one SAE at one layer of one model: ``source.jsonl``, in a *source set*:
``sourceset.jsonl``, of a model: ``model.jsonl``), its *features* (``features/batch-N.jsonl``: a feature's
index, its positive strings ``pos_str`` and values ``pos_values``, ``maxActApprox``, ``frac_nonzero``, and its
direction as ``vector`` when asked), their *explanations* (``explanations/batch-N.jsonl``) and their top
*activations* (``activations/batch-N.jsonl``: ``tokens`` and ``values`` per example). A concept is a feature:
its words (``grounding.json``) are its positive strings and its explanation, its top images its activations,
the image's caption the tokens, the activation the value at the token of interest (every other position is
written 0: only that state is read), the image a relative link in ``dataSource`` and the sample id in
``dataIndex``. Files hold 1024 features each (``batch-0`` the first 1024), as Neuronpedia's exports do, left
uncompressed (``gzip`` each one for the ``.jsonl.gz`` names of Neuronpedia's bucket).

Extension (mmconcepts' own, in ``mmconcepts/activations.jsonl``, one row per activation, keyed by its ``id``):
the image (link and absolute path), the caption, ``region``, the token object's box
``[x0, y0, x1, y1]`` in the image's pixels where the store has ShapesWorld's ground truth, and ``map``,
``{"method", "grid", "box"}`` (as ``explain --heatmaps`` writes it) when the export is asked for maps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.files import FORMAT_VERSION, atomic_write_text, link

__all__ = ["BATCH", "NeuronpediaExport", "neuronpedia_ids", "write_neuronpedia"]

#: Features per ``batch-N.jsonl`` file (Neuronpedia's exports use 1024).
BATCH = 1024


@dataclass(frozen=True)
class NeuronpediaExport:
    """What :func:`write_neuronpedia` wrote: the ids and the row counts."""

    model_id: str
    source_id: str
    n_features: int
    n_activations: int
    n_maps: int


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "model"


def neuronpedia_ids(summary: dict) -> tuple[str, str, str]:
    """``(model id, source set name, source id)`` of a concepts folder: Neuronpedia-style slugs of the model, of
    ``mmconcepts-<method>-<token>``, and ``<layer>-<set>`` (a source is named by its layer and set).

    Examples
    --------
    >>> neuronpedia_ids({"model": "mmconcepts:shapesworld-llava", "method": "semi-nmf", "token": "circle",
    ...                  "layer": "norm"})
    ('mmconcepts-shapesworld-llava', 'mmconcepts-semi-nmf-circle', 'norm-mmconcepts-semi-nmf-circle')
    """
    model = _slug(summary.get("model") or "model")
    source_set = _slug(f"mmconcepts-{summary.get('method')}-{summary.get('token') or 'token'}")
    return model, source_set, f"{summary['layer']}-{source_set}"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _tokens(caption: str, word: str | None, value: float) -> tuple[list[str], list[float], int]:
    """The caption's words and a value per word: ``value`` at the first occurrence of the token of interest
    (the state the activation is read from), 0 elsewhere; the word alone when the caption does not hold it."""
    tokens = caption.split()
    wanted = str(word or "").lower()
    for i, t in enumerate(tokens):
        if t.lower().strip(".,;:!?\"'") == wanted:
            return tokens, [value if j == i else 0.0 for j in range(len(tokens))], i
    return [str(word or "")], [value], 0


def _region(row: dict | None, token: str | None) -> list[float] | None:
    """The token object's box ``[x0, y0, x1, y1]`` from a metadata row's ShapesWorld ground truth, else None."""
    from mmconcepts.data.shapesworld import SIZES
    from mmconcepts.data.truth import token_object

    obj = token_object(((row or {}).get("attributes") or {}).get("objects"), token) if token else None
    if not obj or "x" not in obj or "y" not in obj:
        return None
    r = float(obj.get("radius", SIZES.get(obj.get("size"), 0.0)))
    if r <= 0:
        return None
    x, y = float(obj["x"]), float(obj["y"])
    return [round(x - r, 3), round(y - r, 3), round(x + r, 3), round(y + r, 3)]


def _images(concepts, n_images: int | None) -> list[list[dict]]:
    """Each concept's top images (``{"id", "image", "caption", "activation"}``, paths resolved): the
    grounding's, or the ``n_images`` most activating training samples."""
    from mmconcepts.concepts.concept_set import top_samples
    from mmconcepts.concepts.images import shown_image

    if n_images is None:
        return [[{**im, "image": shown_image(im)} for im in concepts.images(k)] for k in range(concepts.n_concepts)]
    return top_samples(concepts.activations, concepts.train_meta(), n_images)


def _maps(concepts, entries: list[tuple[int, dict]], rows: dict, method: str, model) -> list:
    """The map of each ``(concept, image entry)`` (``None`` where the caption lacks the token)."""
    from mmconcepts.attribution import MapSettings, maps_of_readings, read_rows
    from mmconcepts.concepts.concept_set import model_for
    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading

    adapter = model_for(concepts, model)
    reading = store_reading(concepts.manifest, concepts.token)
    paths = list(dict.fromkeys(str(im["image"]) for _, im in entries))
    readings = read_rows(adapter, [load_image(p) for p in paths], [rows.get(p, {}) for p in paths], reading,
                         mode=concepts.manifest.get("mode", "generate"))
    index = {p: i for i, p in enumerate(paths)}
    return maps_of_readings(adapter, concepts, readings, [(index[str(im["image"])], k) for k, im in entries],
                            MapSettings(method), adapter.prompt(reading["instruction"]))


def _image_links(images: list[list[dict]], folder: Path, out: Path, copy: bool) -> dict[str, str]:
    """Each image's link from the export: a thumbnail copied into ``images/``, or the original's path."""
    from mmconcepts.concepts.images import copy_thumbnails

    if not copy:
        return {str(im["image"]): link(im["image"], out) for entries in images for im in entries}
    entries = [[{"image": im["image"]} for im in e] for e in images]
    copy_thumbnails(entries, folder)
    return {str(src["image"]): (Path(dst["thumbnail"]).relative_to(folder)).as_posix()
            for e_src, e_dst in zip(images, entries) for src, dst in zip(e_src, e_dst)}


def write_neuronpedia(concepts, folder, out=None, *, copy_images: bool = True, n_images: int | None = None,
                      maps: str | None = None, vectors: bool = False, model=None) -> NeuronpediaExport:
    """Write the Neuronpedia rows of a grounded :class:`~mmconcepts.concepts.ConceptSet` into ``folder``.

    Parameters
    ----------
    concepts : ConceptSet (with ``grounding.json``)
    folder : where to write (the temp folder of ``out``)
    out : the folder's final place, which links are relative to (default ``folder``)
    copy_images : copy a thumbnail of each image into ``images/`` (else link the originals)
    n_images : activations per feature (``None``: the grounding's top images)
    maps : a map method (:data:`~mmconcepts.attribution.METHODS`) to map every activation with, or ``None``
    vectors : write each concept's direction as its feature's ``vector``
    model : the model for the maps (a :class:`~mmconcepts.models.ModelOptions`, id or adapter; default the store's)
    """
    folder = Path(folder)
    out = Path(out) if out is not None else folder
    summary = concepts.summary
    model_id, source_set, source_id = neuronpedia_ids(summary)
    images = _images(concepts, n_images)
    links = _image_links(images, folder, out, copy_images)
    rows = {}
    if concepts.features.is_dir():
        for row in concepts.train_meta():
            rows.setdefault(str(row.get("image")), row)
    entries = [(k, im) for k, ims in enumerate(images) for im in ims]
    drawn = _maps(concepts, entries, rows, maps, model) if maps else [None] * len(entries)
    activations = concepts.activations.float()
    directions = concepts.directions.float() if vectors else None
    hook = None
    if vectors:
        from mmconcepts.exchange.export_saelens import hook_name

        hook = hook_name(summary["layer"])
    K = concepts.n_concepts
    features, explanations, acts, extension = [], [], [], []
    for k in range(K):
        words = concepts.grounding["concepts"][k]["words"] if concepts.grounding else []
        column = activations[:, k]
        max_act = round(float(column.max()), 5) if column.numel() else 0.0
        features.append({
            "modelId": model_id, "layer": source_id, "index": str(k), "creatorId": None, "maxActApprox": max_act,
            "hasVector": bool(vectors), "vector": [round(float(v), 6) for v in directions[k]] if vectors else [],
            "vectorLabel": None, "vectorDefaultSteerStrength": max_act if vectors else None, "hookName": hook,
            "pos_str": [w["word"] for w in words], "pos_values": [float(w["score"]) for w in words],
            "neg_str": [], "neg_values": [],
            "frac_nonzero": round(float((column > 0).float().mean()), 6) if column.numel() else 0.0})
        if words:
            explanations.append({"id": f"{source_id}-{k}-words", "modelId": model_id, "layer": source_id,
                                 "index": str(k), "description": ", ".join(w["word"] for w in words),
                                 "authorId": None, "typeName": "mmconcepts-words",
                                 "explanationModelName": f"{summary.get('model')} unembedding"})
    n_maps, ranks = 0, [0] * K
    for (k, im), drawn_map in zip(entries, drawn):
        rank, ranks[k] = ranks[k], ranks[k] + 1
        value = float(im["activation"])
        row = rows.get(str(im["image"]))
        tokens, values, at = _tokens(im.get("caption", ""), (row or {}).get("word") or concepts.token, value)
        ident = f"{source_id}-{k}-{rank}"
        acts.append((k, {"id": ident, "modelId": model_id, "layer": source_id, "index": str(k), "tokens": tokens,
                         "values": values, "maxValue": value, "maxValueTokenIndex": at, "minValue": min(values),
                         "creatorId": None, "dataSource": links[str(im["image"])], "dataIndex": str(im.get("id"))}))
        n_maps += drawn_map is not None
        extension.append({"id": ident, "index": k, "rank": rank, "image": links[str(im["image"])],
                          "image_absolute": str(Path(im["image"]).resolve()), "caption": im.get("caption", ""),
                          "region": _region(row, concepts.token),
                          "map": drawn_map.to_json() if drawn_map is not None else None})
    for b in range(0, max(K, 1), BATCH):
        name = f"batch-{b // BATCH}.jsonl"
        _jsonl(folder / "features" / name, features[b:b + BATCH])
        _jsonl(folder / "explanations" / name, [e for e in explanations if b <= int(e["index"]) < b + BATCH])
        _jsonl(folder / "activations" / name, [a for kk, a in acts if b <= kk < b + BATCH])
    _jsonl(folder / "model.jsonl", [{"id": model_id, "displayName": str(summary.get("model")),
                                     "displayNameShort": model_id, "dimension": int(summary["hidden_size"]),
                                     "instruct": False, "creatorId": None}])
    _jsonl(folder / "sourceset.jsonl", [{"modelId": model_id, "name": source_set, "hasDashboards": True,
                                         "visibility": "PRIVATE", "creatorId": None,
                                         "description": f"mmconcepts {summary.get('method')} concepts of "
                                                        f"'{summary.get('token')}', K = {K}"}])
    _jsonl(folder / "source.jsonl", [{"id": source_id, "modelId": model_id, "setName": source_set,
                                      "hasDashboards": True, "inferenceEnabled": False, "visibility": "PRIVATE",
                                      "creatorId": None, "num_prompts": int(summary.get("n_samples") or 0),
                                      "dataset": _dataset(concepts),
                                      "notes": f"layer {summary['layer']}; activations at the token "
                                               f"'{summary.get('token')}'; see README.md"}])
    _jsonl(folder / "mmconcepts" / "activations.jsonl", extension)
    atomic_write_text(folder / "mmconcepts" / "export.json", json.dumps({
        "format_version": FORMAT_VERSION, "format": "neuronpedia", "concepts": link(concepts.path, out),
        "model_id": model_id, "source_set": source_set, "source_id": source_id, "n_features": K,
        "n_activations": len(acts), "maps": maps, "copy_images": copy_images, "vectors": vectors}, indent=1))
    atomic_write_text(folder / "README.md", _readme(concepts, model_id, source_id, len(acts), n_maps))
    return NeuronpediaExport(model_id, source_id, K, len(acts), n_maps)


def _dataset(concepts) -> str | None:
    """The dataset the store read (its absolute path where the store recorded one)."""
    from mmconcepts.files import resolve_field

    data = concepts.manifest.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return None
    return str(resolve_field(data, "source", concepts.features))


def _readme(concepts, model_id: str, source_id: str, n_activations: int, n_maps: int) -> str:
    s = concepts.summary
    return "\n".join([
        f"# {s.get('method')} concepts of '{s.get('token')}' as Neuronpedia rows", "",
        f"Exported by `mmconcepts export --format neuronpedia` from `{concepts.path}`: model `{model_id}`, "
        f"source `{source_id}`, {concepts.n_concepts} features, {n_activations} activations"
        + (f", {n_maps} concept maps" if n_maps else "") + ".", "",
        "- `model.jsonl`, `sourceset.jsonl`, `source.jsonl`: one row each.",
        "- `features/batch-N.jsonl`: one row per concept (1024 a file); its words are `pos_str`.",
        "- `explanations/batch-N.jsonl`: the words as one explanation per concept.",
        "- `activations/batch-N.jsonl`: the top images of each concept: the caption as `tokens`, the activation "
        "at the token of interest in `values` (every other position 0: only that state is read), the image in "
        "`dataSource` (a link relative to this folder), the sample id in `dataIndex`.",
        "- `mmconcepts/activations.jsonl` (extension): per activation `id`, the image, its `region` (the token "
        "object's box, ShapesWorld) and `map` (`{method, grid, box}`, with `--maps`).",
        "- `images/`: thumbnails of the top images (unless `--no-copy-images`).", "",
        "Neuronpedia's own exports gzip each `batch-N.jsonl` (`gzip features/*.jsonl ...`).", ""])
