"""``mmconcepts evaluate``: how grounded and how disentangled are the concepts, next to baselines.

Given a grounded concepts folder (learnt on training features) and a feature store of test samples (same
model, same layer), this learns the comparison methods on the same training features with the same number
of concepts, encodes every test sample with every dictionary, and scores the words of each test sample's
top-1 and top-3 concepts:

- **overlap** between the concepts' word sets (the paper's disentanglement measure, lower is better);
- **CLIPScore** of the test image against "A photo is described by the words ..." (when a CLIP model is
  given) and **BERTScore** F1 of the reference caption against the words (when a BERT model is given);
- on ShapesWorld, **grounding precision** (the share of words that are true attributes of the test image),
  **coverage** (the share of attribute values owned by a concept whose top images all share them) and
  **purity** of the top images.

Baselines: **rnd-words** (each concept's words replaced by as many random valid words), **noise-imgs**
(a dictionary learnt from the model's representations of noise images read with the training captions) and
**gt-captions** (the reference captions in place of the words). A metric that does not apply is absent.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import FORMAT_VERSION, link, link_fields

DEFAULT_METHODS = ("semi-nmf", "pca", "kmeans", "simple")
BASELINES = ("rnd-words", "noise-imgs", "gt-captions")
METRIC_ORDER = ("overlap", "clipscore_top1", "clipscore_top3", "bertscore_top1", "bertscore_top3",
                "grounding_precision_top1", "grounding_precision_top3", "coverage", "purity")


@dataclass
class _Concepts:
    """One dictionary's view of the data: its words and the activations of train and test samples."""

    words: list[list[str]]
    train: object  # N_train x K activations, or None
    test: object  # N_test x K activations


@dataclass
class _Context:
    token: str
    layer: str
    test_meta: list[dict]
    train_meta: list[dict]
    clip: object = None
    bert: object = None
    images: list | None = None

    @property
    def shapes(self) -> bool:
        return all("attributes" in m for m in self.test_meta + self.train_meta)


def _top(activations, k: int) -> list[list[int]]:
    k = min(k, activations.shape[1])
    return activations.float().topk(k, dim=1).indices.tolist()


def _texts_score(ctx: _Context, texts_per_sample: list[list[str]]) -> dict:
    """Mean CLIPScore / BERTScore of each test sample against its texts: ``{"clip": [...], "bert": [...]}``
    over the samples that have at least one text."""
    from mmconcepts.evaluation.scorers import words_prompt

    flat = [(i, t) for i, texts in enumerate(texts_per_sample) for t in texts]
    if not flat:
        return {}
    raw = {}
    if ctx.clip is not None:
        raw["clip"] = ctx.clip.score([ctx.images[i] for i, _ in flat],
                                     [words_prompt(t.split(", ")) for _, t in flat]).tolist()
    if ctx.bert is not None:
        refs = [(ctx.test_meta[i].get("references") or [""])[0] for i, _ in flat]
        raw["bert"] = ctx.bert.f1([t for _, t in flat], refs).tolist()
    result = {}
    for name, values in raw.items():
        sums = [0.0] * len(texts_per_sample)
        for (i, _), v in zip(flat, values):
            sums[i] += v
        result[name] = [sums[i] / len(t) for i, t in enumerate(texts_per_sample) if t]
    return result


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _score(ctx: _Context, concepts: _Concepts, with_overlap: bool = True) -> dict:
    from mmconcepts.evaluation import metrics

    out = {}
    if with_overlap:
        out["overlap"] = metrics.overlap([set(w) for w in concepts.words])
    for top in (1, 3):
        tops = _top(concepts.test, top)
        texts = [[", ".join(concepts.words[k]) for k in row if concepts.words[k]] for row in tops]
        for name, per_sample in _texts_score(ctx, texts).items():
            out[f"{name}score_top{top}"] = _mean(per_sample)
        if ctx.shapes:
            out[f"grounding_precision_top{top}"] = metrics.grounding_precision(
                concepts.words, [m["attributes"] for m in ctx.test_meta], tops)
    if ctx.shapes and concepts.train is not None:
        train_attributes = [m["attributes"] for m in ctx.train_meta]
        # every sample holds the token of interest: its value is shared by construction, not a concept
        out["coverage"] = metrics.coverage(concepts.train, train_attributes, exclude=[ctx.token])["coverage"]
        out["purity"] = metrics.purity(concepts.train, train_attributes, exclude=[ctx.token])
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _fit(method: str, n_concepts: int, Z, seed: int, params: dict | None = None):
    """Fit a comparison method with the same K (and the seed, for the methods that draw at random);
    ``params``: the constructor parameters to use (those of the main dictionary, for the noise baseline)."""
    import inspect

    from mmconcepts.decompose import METHODS

    cls = METHODS[method]
    kwargs = {"seed": seed} if "seed" in inspect.signature(cls).parameters else {}
    kwargs.update(params or {})
    kwargs["n_concepts"] = n_concepts
    return cls(**kwargs).fit(Z)


def noise_features(adapter, train_meta: list[dict], reading: dict, layer: str, n: int, seed: int,
                   batch_size: int = 32):
    """Representations of uniform-noise images read with the training captions (teacher mode); ``reading``:
    how the training store read its images (:func:`~mmconcepts.extract.extraction.store_reading`)."""
    import numpy as np
    import torch
    from PIL import Image

    from mmconcepts.data.readers import Sample, load_image
    from mmconcepts.extract.extraction import represent

    size = load_image(train_meta[0]["image"]).size
    rng = np.random.default_rng(seed)
    rows = []
    for start in range(0, n, batch_size):
        chunk = [train_meta[i % len(train_meta)] for i in range(start, min(start + batch_size, n))]
        images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in chunk]
        samples = [Sample(id=f"noise-{start + j}", image=Path(f"noise-{start + j}.png"),
                          captions=[m["references"][0] if m.get("references") else m["caption"]])
                   for j, m in enumerate(chunk)]
        features, _, _ = represent(adapter, samples, images, layers=[layer], mode="teacher", **reading)
        if features:
            rows.append(features[layer])
    if not rows:
        raise MMConceptsError("no noise-image representation could be read; drop the noise-imgs baseline")
    return torch.cat(rows)


def _markdown(metrics: dict) -> str:
    rows = {**metrics["methods"], **metrics["baselines"]}
    columns = [m for m in METRIC_ORDER if any(m in r for r in rows.values())]
    lines = [f"# Concept evaluation: token '{metrics['token']}', layer {metrics['layer']}, "
             f"{metrics['n_test']} test samples", "",
             "| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        cells = [f"{row[c]:.3f}" if isinstance(row.get(c), (int, float)) else "–" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(concepts, test_features, out, *, methods=DEFAULT_METHODS, baselines=BASELINES, clip_model=None,
             bert_model=None, bert_layers: int | None = None, model=None, seed: int = 0,
             n_noise: int | None = None, n_explanations: int = 8, overwrite: bool = False) -> dict:
    """Evaluate a concepts folder on a test feature store; writes metrics.json, metrics.md, overlap.json and
    explanations.json into ``out`` and returns the metrics.

    ``model``: a loaded adapter, :class:`~mmconcepts.models.ModelOptions` or an id; every option left unset
    follows the training store's run record. Grounding the comparison methods reads only the unembedding
    and final norm; the Noise-Imgs baseline runs the whole model. The scorers run on its ``device``.
    """
    from mmconcepts.data.readers import load_image
    from mmconcepts.decompose import METHODS
    from mmconcepts.evaluation import metrics as M
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.extract.store import load_features, read_manifest
    from mmconcepts.grounding.concepts import grounder_for, load_concepts, model_for
    from mmconcepts.grounding.explain import top_concepts
    from mmconcepts.models import ModelAdapter
    from mmconcepts.models.options import as_options

    unknown = [m for m in methods if m not in METHODS] + [b for b in baselines if b not in BASELINES]
    if unknown:
        raise MMConceptsError(f"unknown method or baseline {unknown[0]!r}: choose from "
                              f"{', '.join(list(METHODS) + list(BASELINES))}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MMConceptsError(f"output folder {out} is not empty: choose a new folder or pass --overwrite")
    cs = load_concepts(concepts, require_grounding=True)
    summary = cs.summary
    layer, token, main = str(summary["layer"]), summary["token"], summary["method"]
    test_manifest = read_manifest(test_features)
    train_manifest = read_manifest(cs.features)
    if test_manifest.get("model") != train_manifest.get("model"):
        raise MMConceptsError(f"the test features come from model {test_manifest.get('model')!r} but the concepts "
                              f"from {train_manifest.get('model')!r}; extract the test features with the same model")
    if test_manifest.get("token") != token:
        raise MMConceptsError(f"the test features are for token {test_manifest.get('token')!r}, the concepts for "
                              f"{token!r}; extract test features for the same token")
    Z_test, test_meta = load_features(test_features, layer)
    if Z_test.shape[0] == 0:
        raise MMConceptsError(f"no test samples in {test_features}")
    Z_train, train_meta = load_features(cs.features, layer)
    K = cs.n_concepts
    ctx = _Context(token=token, layer=layer, test_meta=test_meta, train_meta=train_meta)
    device = str(model.device) if isinstance(model, ModelAdapter) else as_options(model).device
    if clip_model is not None:
        from mmconcepts.evaluation.scorers import CLIPScorer

        ctx.clip = CLIPScorer(clip_model, device=device)
        ctx.images = [load_image(m["image"]) for m in test_meta]
    if bert_model is not None:
        from mmconcepts.evaluation.scorers import BERTScorer

        ctx.bert = BERTScorer(bert_model, num_layers=bert_layers, device=device)

    adapter = None
    needs_model = any(m != main for m in methods) or "noise-imgs" in baselines or "rnd-words" in baselines
    if needs_model:  # words need only the unembedding; the noise baseline runs the whole model
        adapter = model_for(cs, model, head="noise-imgs" not in baselines)
    grounder = grounder_for(cs, adapter, cs.grounding, train_meta) if adapter is not None else None

    results, overlaps, views = {}, {}, {}
    for method in methods:
        if method == main:
            view = _Concepts([cs.words(k) for k in range(K)], cs.activations, cs.dictionary.transform(Z_test))
        else:
            dictionary = _fit(method, K, Z_train, seed)
            train_activations = dictionary.transform(Z_train)
            view = _Concepts(grounder.words_of(dictionary, Z_train, train_activations), train_activations,
                             dictionary.transform(Z_test))
        views[method] = view
        results[method] = _score(ctx, view)
        overlaps[method] = M.overlap_matrix([set(w) for w in view.words])

    main_view = views.get(main) or _Concepts([cs.words(k) for k in range(K)], cs.activations,
                                             cs.dictionary.transform(Z_test))
    base = {}
    if "rnd-words" in baselines:
        from mmconcepts.grounding.words import random_words

        pool = grounder.pool()
        rng = random.Random(seed)
        words = [random_words(pool, len(w), rng) for w in main_view.words]
        base["rnd-words"] = _score(ctx, _Concepts(words, None, main_view.test))
    if "noise-imgs" in baselines:
        Z_noise = noise_features(adapter, train_meta, store_reading(train_manifest), layer,
                                 n_noise or min(len(train_meta), 512), seed)
        dictionary = _fit(main, min(K, Z_noise.shape[0]), Z_noise, seed, cs.dictionary.get_params())
        base["noise-imgs"] = _score(ctx, _Concepts(grounder.words_of(dictionary, Z_noise), None,
                                                   dictionary.transform(Z_test)))
    if "gt-captions" in baselines:
        base["gt-captions"] = _gt_captions(ctx)

    metrics = {"token": token, "layer": layer, "n_test": len(test_meta), "n_train": len(train_meta),
               "n_concepts": K, "model": train_manifest.get("model"), "main_method": main,
               **link_fields("concepts", cs.path, out), **link_fields("test_features", test_features, out),
               "methods": results, "baselines": base}
    explanations = []
    for i, m in enumerate(test_meta[:n_explanations]):
        tops = [{**c, "images": [link(im, out) for im in c["images"]]}
                for c in top_concepts(main_view.test[i], cs, 3)]
        explanations.append({"id": m["id"], "image": link(m["image"], out), "caption": m["caption"],
                             "references": m.get("references", []), "concepts": tops})
    version = {"format_version": FORMAT_VERSION}
    _write(out, {"metrics.json": json.dumps({**version, **metrics}, indent=2), "metrics.md": _markdown(metrics),
                 "overlap.json": json.dumps({**version, "methods": overlaps}),
                 "explanations.json": json.dumps({**version, "explanations": explanations}, indent=1)})
    return metrics


def _gt_captions(ctx: _Context) -> dict:
    """The reference captions in place of the words (an upper reference)."""
    from mmconcepts.evaluation import metrics as M
    from mmconcepts.grounding.words import is_valid_word

    out = {}
    refs = [m.get("references") or [m["caption"]] for m in ctx.test_meta]
    if ctx.clip is not None:
        out["clipscore_top1"] = round(_mean(ctx.clip.score(ctx.images, [r[0] for r in refs]).tolist()), 4)
    if ctx.bert is not None:
        pairs = [(r[1], r[0]) for r in refs if len(r) > 1]
        if pairs:
            out["bertscore_top1"] = round(_mean(ctx.bert.f1([a for a, _ in pairs], [b for _, b in pairs]).tolist()), 4)
    if ctx.shapes:
        words = [[w for w in r[0].lower().replace(",", " ").split() if is_valid_word(w)] for r in refs]
        out["grounding_precision_top1"] = round(M.grounding_precision(
            words, [m["attributes"] for m in ctx.test_meta], [[i] for i in range(len(refs))]), 4)
    return out


def _write(out: Path, files: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        if out.exists():
            for name in files:
                os.replace(tmp / name, out / name)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
