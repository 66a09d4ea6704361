"""``mmconcepts trace``: word concepts traced to the image-token concepts that feed them (or image-token concepts
to the vision tower's concepts: ``"pair": "image->vision"``), written as a folder.

:func:`run_trace` reads the two concepts folders, traces the word concepts through the image concepts on the
images given (:func:`mmconcepts.attribution.trace.trace_images`), ranks each word concept's image concepts by
their mean contribution (:func:`rank`) and, on ShapesWorld, says whether the first-ranked image concept has the
attribute value the word concept names (:func:`agreement`; an image concept's value is the majority value of the
objects under its top training patches, :func:`image_values`). The folder (built beside ``out``, swapped in):

For the pair ``image->vision`` (:mod:`~mmconcepts.attribution.vision_trace`) the "word" concepts are the
image-token concepts (``--concepts``, their target the activation summed over the image's tokens, their value
what their top training patches lie on) and the "image" concepts the vision concepts (``--through``, named by
their value or ``vision concept j``); the fields are the same.

``trace.json``
    ``{word_concepts, image_concepts (links), pair, token, word_layer, image_layer, mode, n_images, settings, images:
    [{image (link), caption, boxes}], image_values: [{concept, words, value: [attribute, value] | null, share}]
    (ShapesWorld), concepts: [{index, words, target, activation, total, residual: {mean, per_image}, ranking:
    [{concept, words, mean, per_image, value}]}], agreement: {n, agree, share, concepts: [...]} (ShapesWorld)}``
    (per-image values in the order of ``images``).
``trace.md``
    One row per word concept: its words, the top image concepts' words and mean contributions, the residual.
``maps.safetensors``
    ``patches.<i>``: image ``i``'s ``K x P x J`` per-patch contributions (boxes in ``trace.json``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mmconcepts.attribution.trace import TraceSettings
from mmconcepts.errors import MMConceptsError

__all__ = ["RankedConcept", "TraceOutputs", "WordTrace", "agreement", "image_concept_label", "image_values", "rank",
           "run_trace"]


@dataclass
class RankedConcept:
    """One image concept's contribution to one word concept: ``mean`` over the images, ``per_image``."""

    concept: int
    words: list
    mean: float
    per_image: list
    value: tuple | None = None


@dataclass
class WordTrace:
    """One word concept: its image concepts ranked by mean contribution (highest first), the residual, the
    gradient x input total and its activation on every image."""

    index: int
    words: list
    ranking: list
    residual: list
    total: list
    activation: list
    target: tuple | None = None

    def to_json(self, digits: int = 5) -> dict:
        def r(values):
            return [round(float(v), digits) for v in values]

        mean = sum(self.residual) / len(self.residual)
        return {"index": self.index, "words": self.words, "target": list(self.target) if self.target else None,
                "activation": r(self.activation), "total": r(self.total),
                "residual": {"mean": round(float(mean), digits), "per_image": r(self.residual)},
                "ranking": [{"concept": c.concept, "words": c.words, "mean": round(c.mean, digits),
                             "per_image": r(c.per_image), "value": list(c.value) if c.value else None}
                            for c in self.ranking]}


@dataclass
class TraceOutputs:
    """Everything a trace computed, before it is written."""

    word_traces: list
    images: list
    values: list | None = None
    agreement: dict | None = None
    info: dict = field(default_factory=dict)


def rank(traces: list, word_words: list, image_words: list, values: list | None = None) -> list[WordTrace]:
    """Every word concept's image concepts ranked by mean contribution over the ``traces``
    (:class:`~mmconcepts.attribution.trace.ImageTrace` with a trace); ``values``: each image concept's
    ``(attribute, value)`` or ``None`` (:func:`image_values`)."""
    import numpy as np

    C = np.stack([t.trace.contributions for t in traces])          # n x K x J
    out = []
    for k in range(C.shape[1]):
        means = C[:, k, :].mean(0)
        order = sorted(range(C.shape[2]), key=lambda j: (-means[j], j))
        ranking = [RankedConcept(j, list(image_words[j]), float(means[j]), C[:, k, j].tolist(),
                                 values[j] if values else None) for j in order]
        out.append(WordTrace(k, list(word_words[k]), ranking, [float(t.trace.residual[k]) for t in traces],
                             [float(t.trace.total[k]) for t in traces],
                             [float(t.trace.activation[k]) for t in traces]))
    return out


def image_values(image, n_top: int = 20) -> list | None:
    """Each image concept's ``((attribute, value) or None, share)``: the value most of its ``n_top`` top training
    patches lie on (:func:`~mmconcepts.evaluation.grounding.patches.patch_values`); ``None`` when the image
    store's rows carry no ShapesWorld ``object``."""
    from mmconcepts.evaluation.grounding.patches import has_patch_truth, patch_values

    meta = image.train_meta()
    if not has_patch_truth(meta):
        return None
    return [(tuple(v) if v else None, float(s)) for v, s in patch_values(image.activations, meta, n_top=n_top)]


def agreement(word_traces: list) -> dict:
    """For each word concept whose first word names an attribute value: is its first-ranked image concept's
    value the same? ``{n, agree, share, concepts: [{concept, words, target, top, top_words, top_value, agree}]}``."""
    rows = []
    for w in word_traces:
        if w.target is None or not w.ranking:
            continue
        top = w.ranking[0]
        rows.append({"concept": w.index, "words": w.words[:3], "target": list(w.target), "top": top.concept,
                     "top_words": top.words[:3], "top_value": list(top.value) if top.value else None,
                     "agree": top.value == w.target})
    n = len(rows)
    agree = sum(r["agree"] for r in rows)
    return {"n": n, "agree": agree, "share": round(agree / n, 4) if n else None, "concepts": rows}


def _images_of(images, dataset, teacher: bool):
    """``(paths, captions or None)``: the ``--image`` paths, or the dataset's samples (their captions in
    teacher mode)."""
    if bool(images) == bool(dataset):
        raise MMConceptsError("give the images with --images DATASET or --image IMG (repeatable), not both or "
                              "neither")
    if images:
        return [Path(p) for p in images], None
    from mmconcepts.data import open_dataset

    samples = list(open_dataset(dataset))
    if not samples:
        raise MMConceptsError(f"no image in {dataset}; give a dataset folder with images")
    return [s.image for s in samples], ([list(s.captions) for s in samples] if teacher else None)


def run_trace(word, image, out: str | os.PathLike, *, images=None, dataset=None, model=None,
              settings: TraceSettings | None = None, overwrite: bool = False) -> TraceOutputs:
    """Trace the word concepts of ``word`` through the image-token concepts of ``image`` and write ``out``.

    Parameters
    ----------
    word, image : path or ConceptSet
        The word concepts (``--positions token``) and the image-token concepts (an earlier layer).
    out : path
        The trace folder (module docstring).
    images : list of path, or None
        The images; or ``dataset``, a dataset folder (``mmconcepts shapesworld``), read in order.
    model : ModelAdapter, ModelOptions, id or None
        The model (unset options follow the word store's run record).
    settings : TraceSettings
    overwrite : replace a non-empty ``out``.

    Returns
    -------
    TraceOutputs
    """
    from mmconcepts.attribution.trace import check_pair, trace_images
    from mmconcepts.concepts.concept_set import ConceptSet, load_concepts
    from mmconcepts.outputs import OutputFolder, check_writable_target

    settings = settings or TraceSettings()
    word = word if isinstance(word, ConceptSet) else load_concepts(word)
    image = image if isinstance(image, ConceptSet) else load_concepts(image)
    inputs = [word.path, image.path] + ([dataset] if dataset else [])
    check_writable_target(out, overwrite, inputs=inputs)
    pair = check_pair(word, image)
    teacher = pair == "word->image" and word.manifest.get("mode") == "teacher"
    paths, captions = _images_of(images, dataset, teacher)
    traces = trace_images(word, image, paths, model, settings=settings, captions=captions)
    values = image_values(image, settings.n_top_patches)
    word_traces = rank(traces, word.word_sets(), image.word_sets(), [v for v, _ in values] if values else None)
    if values is not None:
        targets = _targets(word, word_traces, pair, settings.n_top_patches)
        for w, target in zip(word_traces, targets):
            w.target = target
    mode = "prompt" if pair == "image->vision" else "teacher" if captions is not None else "generate"
    info = {"pair": pair, "token": word.token, "word_layer": word.summary["layer"],
            "image_layer": image.summary["layer"], "mode": mode, "n_images": len(traces),
            "word_method": word.summary.get("method"), "image_method": image.summary.get("method")}
    result = TraceOutputs(word_traces, traces, values, agreement(word_traces) if values is not None else None, info)
    with OutputFolder(out, overwrite=overwrite, inputs=inputs) as tmp:
        write_folder(tmp, Path(out), result, word, image, settings)
    return result


def _targets(word, word_traces: list, pair: str, n_top: int) -> list:
    """The ``(attribute, value)`` each traced concept stands for: a word concept's first word
    (:func:`~mmconcepts.data.truth.concept_target`), an image-token concept's top patches (:func:`image_values`)."""
    from mmconcepts.data.truth import concept_target

    if pair != "image->vision":
        return [concept_target(w.words) for w in word_traces]
    values = image_values(word, n_top)
    return [values[w.index][0] if values else None for w in word_traces]


def write_folder(tmp: Path, out: Path, result: TraceOutputs, word, image, settings: TraceSettings) -> None:
    """Write ``trace.json``, ``trace.md`` and ``maps.safetensors`` into ``tmp`` (links relative to ``out``)."""
    from dataclasses import asdict

    import torch
    from safetensors.torch import save

    from mmconcepts.files import atomic_write_bytes, atomic_write_text, link, link_fields, write_json

    record = {**link_fields("word_concepts", word.path, out), **link_fields("image_concepts", image.path, out),
              **result.info, "settings": asdict(settings),
              "images": [{"image": link(t.image, out), "caption": t.caption, "boxes": t.boxes}
                         for t in result.images]}
    if result.values is not None:
        record["image_values"] = [{"concept": j, "words": image.words(j)[:3], "value": list(v) if v else None,
                                   "share": round(s, 4)} for j, (v, s) in enumerate(result.values)]
    record["concepts"] = [w.to_json() for w in result.word_traces]
    if result.agreement is not None:
        record["agreement"] = result.agreement
    write_json(tmp / "trace.json", record, indent=None)
    atomic_write_text(tmp / "trace.md", markdown(result, settings.top))
    tensors = {f"patches.{i}": torch.as_tensor(t.trace.patches, dtype=torch.float32).contiguous()
               for i, t in enumerate(result.images)}
    atomic_write_bytes(tmp / "maps.safetensors", save(tensors))


def image_concept_label(result: TraceOutputs, ranked) -> str:
    """How an image concept of a ranking is named: on ShapesWorld ``on VALUE (SHARE)``, the value its top training
    patches lie on (it says more than its logit-lens words), else its first three words."""
    value = result.values[ranked.concept] if result.values is not None else None
    if value is not None and value[0] is not None:
        return f"on {value[0][1]} ({value[1]:.2f})"
    if not ranked.words and result.info.get("pair") == "image->vision":
        return f"vision concept {ranked.concept}"
    return ", ".join(ranked.words[:3]) or "(no word)"


def traced_label(result: TraceOutputs, word_trace) -> str:
    """How a traced concept is named: a word concept by its first two words; an image-token concept (pair
    image->vision) on ShapesWorld by the value its top training patches lie on, else by its words."""
    if result.info.get("pair") == "image->vision" and word_trace.target:
        return f"on {word_trace.target[1]}"
    return ", ".join(word_trace.words[:2]) or "(no word)"


def markdown(result: TraceOutputs, top: int = 3) -> str:
    """``trace.md``: each traced concept (a word concept, or an image-token concept traced to the vision tower)
    -> its ``top`` earlier concepts' names and mean contributions, the unexplained part, the agreement."""
    info = result.info
    if info.get("pair") == "image->vision":
        title = (f"# Trace of image-token concepts at layer {info.get('word_layer')} <- vision concepts at layer "
                 f"{info.get('image_layer')} ({info.get('n_images')} images)")
        upper, lower, states = "image-token concept", "vision concept", "the vision layer's patch states"
        named, name_column = "a concept", "value or words"
        summed = " summed over the image's tokens"

        def name(w):
            return traced_label(result, w)
    else:
        title = (f"# Trace of \"{info.get('token')}\": word concepts at layer {info.get('word_layer')} <- image-token "
                 f"concepts at layer {info.get('image_layer')} ({info.get('n_images')} images)")
        upper, lower, states = "word concept", "image concept", "the image tokens' states"
        named, name_column, summed = "an image concept", "words", ""

        def name(w):
            return ", ".join(w.words[:3]) or "(no word)"
    lines = [title, "",
             f"Mean contribution (gradient x activation, summed over the patches) of each {lower} to the {upper}'s "
             f"activation{summed}; unexplained: the part of {states} the {lower}s do not reconstruct. On ShapesWorld "
             f"{named} is named by the value its top training patches lie on (and the share that do), else by its "
             "words.", "",
             f"| {upper} | {name_column} | activation | " + " | ".join(f"{lower} {i + 1}" for i in range(top))
             + " | unexplained |", "|---" * (top + 4) + "|"]
    for w in result.word_traces:
        cells = [f"{c.concept}: {image_concept_label(result, c)} ({c.mean:+.3f})" for c in w.ranking[:top]]
        cells += [""] * (top - len(cells))
        act = sum(w.activation) / len(w.activation)
        res = sum(w.residual) / len(w.residual)
        lines.append(f"| {w.index} | {name(w)} | {act:.3f} | " + " | ".join(cells) + f" | {res:+.3f} |")
    if result.agreement is not None:
        a = result.agreement
        share = "n/a" if a["share"] is None else f"{a['share']:.2f}"
        kind = "word concepts naming one" if upper == "word concept" else "image-token concepts with one"
        lines += ["", f"Agreement (ShapesWorld): the first {lower} has the {upper}'s attribute value for "
                      f"{a['agree']} of {a['n']} {kind} ({share})."]
    return "\n".join(lines) + "\n"
