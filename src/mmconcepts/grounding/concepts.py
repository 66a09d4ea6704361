"""Ground a learnt dictionary in words and images, and read a concepts folder back.

:func:`ground` adds ``grounding.json`` to the folder written by ``mmconcepts learn``: for every concept its
words (decoded through the model's unembedding, :mod:`mmconcepts.grounding.text`) and its most activating
training samples (visual grounding). :func:`load_concepts` returns everything a later stage needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import link, read_json, resolve, resolve_field, write_json
from mmconcepts.grounding.text import MIN_RATIO


def top_samples(activations, meta: list[dict], n_images: int = 5) -> list[list[dict]]:
    """Visual grounding: the ``n_images`` most activating samples of every concept (column of ``activations``)."""
    import torch

    n = min(n_images, activations.shape[0])
    values, rows = torch.topk(activations.float(), n, dim=0)
    result = []
    for k in range(activations.shape[1]):
        result.append([{"id": meta[r]["id"], "image": meta[r]["image"], "caption": meta[r].get("caption", ""),
                        "activation": round(float(v), 5)}
                       for v, r in zip(values[:, k].tolist(), rows[:, k].tolist())])
    return result


@dataclass
class ConceptSet:
    """A grounded concepts folder: the dictionary, its training activations, summary and grounding."""

    path: Path
    dictionary: object
    summary: dict
    activations: object
    grounding: dict | None

    @property
    def features(self) -> Path:
        """The feature store the dictionary was learnt from (found relative to this folder when it moved)."""
        return resolve_field(self.summary, "features", self.path)

    @property
    def n_concepts(self) -> int:
        return int(self.dictionary.components_.shape[0])

    def words(self, k: int) -> list[str]:
        if self.grounding is None:
            return []
        return [w["word"] for w in self.grounding["concepts"][k]["words"]]

    def images(self, k: int) -> list[dict]:
        if self.grounding is None:
            return []
        return self.grounding["concepts"][k]["images"]


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise MMConceptsError(f"{path.name} missing in {path.parent}; is this a folder made by `mmconcepts learn`?")
    return read_json(path, "run `mmconcepts learn` again")


def _images_at(grounding: dict, base: Path, to_stored: bool) -> dict:
    """``grounding`` with every concept image's path stored relative to ``base`` (or resolved from it)."""
    concepts = [{**c, "images": [{**im, "image": link(im["image"], base) if to_stored else
                                  str(resolve(im["image"], base))} for im in c.get("images", [])]}
                for c in grounding.get("concepts", [])]
    return {**grounding, "concepts": concepts}


def load_concepts(path: str | os.PathLike, require_grounding: bool = False) -> ConceptSet:
    """Read a concepts folder written by ``mmconcepts learn``."""
    from safetensors.torch import load_file

    from mmconcepts.decompose import load_dictionary

    path = Path(path)
    if not path.is_dir():
        raise MMConceptsError(f"concepts folder not found: {path}; create it with `mmconcepts learn`")
    summary = _read_json(path / "summary.json")
    dictionary = load_dictionary(path)
    try:
        activations = load_file(str(path / "activations.safetensors"))["activations"]
    except Exception:  # missing or truncated file: safetensors raises several error types
        raise MMConceptsError(f"cannot read {path / 'activations.safetensors'}; run `mmconcepts learn` again") \
            from None
    grounding = _read_json(path / "grounding.json") if (path / "grounding.json").exists() else None
    if grounding is not None:
        grounding = _images_at(grounding, path, to_stored=False)
    if require_grounding and grounding is None:
        raise MMConceptsError(f"{path} has no grounding.json; run `mmconcepts learn` without --no-ground")
    return ConceptSet(path, dictionary, summary, activations, grounding)


def grounder_for(concepts: ConceptSet, model, settings: dict | None = None, meta: list[dict] | None = None):
    """The :class:`~mmconcepts.grounding.text.WordGrounder` of a concepts folder (its saved settings)."""
    from mmconcepts.extract.store import load_metadata
    from mmconcepts.grounding.text import WordGrounder, caption_vocabulary

    summary = concepts.summary
    settings = dict(settings or {})
    allowed = None
    if settings.get("vocabulary", "all") == "captions":
        meta = meta if meta is not None else load_metadata(concepts.features)
        allowed = caption_vocabulary(m.get("caption", "") for m in meta)
    return WordGrounder(model, decode=settings.get("decode", "effect"), apply_norm=settings.get("apply_norm"),
                        layer=str(summary.get("layer")), n_words=settings.get("n_words", 10),
                        top_k=settings.get("top_k", 50), allowed=allowed,
                        min_ratio=settings.get("min_ratio", MIN_RATIO),
                        exclude=settings.get("exclude", token_words(concepts)))


def token_words(concepts: ConceptSet) -> list[str]:
    """The token of interest and its ``also`` variants: words no concept is grounded in (they say nothing
    about a concept: every concept of "dog" predicts "dog" and "dogs")."""
    from mmconcepts.extract.store import read_manifest

    store = concepts.features
    also = read_manifest(store).get("also", []) if (store / "manifest.json").is_file() else []
    return [w for w in [concepts.summary.get("token", ""), *also] if w]


def model_for(concepts: ConceptSet, model=None, head: bool = False):
    """The model a later stage uses for a concepts folder: ``model`` if it is a loaded adapter; else the
    :class:`~mmconcepts.models.ModelOptions` (or id) ``model``, every unset option following the feature
    store's run record. ``head``: only the unembedding, final norm and tokenizer (decoding words)."""
    from mmconcepts.extract.store import read_manifest
    from mmconcepts.models import ModelAdapter
    from mmconcepts.models.options import as_options

    if isinstance(model, ModelAdapter):
        return model
    store = concepts.features
    manifest = read_manifest(store) if (store / "manifest.json").is_file() else {"model": concepts.summary["model"]}
    options = as_options(model).following(manifest)
    return options.load_head() if head else options.load()


def ground(path: str | os.PathLike, model=None, decode: str = "effect", apply_norm: bool | None = None,
           n_words: int = 10, n_images: int = 5, vocabulary: str = "all", min_ratio: float | None = MIN_RATIO,
           keep_token: bool = False) -> dict:
    """Ground every concept of a concepts folder in words and images; writes ``grounding.json``.

    ``model`` is a loaded adapter, :class:`~mmconcepts.models.ModelOptions`, a model id/folder, or ``None``:
    the model the features were extracted with, as the store's run record says. Only the unembedding, the
    final norm and the tokenizer are read (:func:`~mmconcepts.models.head.load_head`), not the whole model.
    ``decode``, ``apply_norm``, ``n_words`` and ``min_ratio`` are those of
    :class:`~mmconcepts.grounding.text.WordGrounder`. ``vocabulary="all"`` allows any word of the tokenizer,
    ``"captions"`` only words the model used in the store's captions. The token of interest is not a
    grounded word unless ``keep_token``.
    """
    from mmconcepts.extract.store import iter_feature_shards, load_metadata
    from mmconcepts.grounding.text import check_settings

    if vocabulary not in ("captions", "all"):
        raise MMConceptsError(f"unknown vocabulary {vocabulary!r}: choose captions or all")
    check_settings(decode, min_ratio, n_words)
    concepts = load_concepts(path)
    summary = concepts.summary
    store = concepts.features
    model = model_for(concepts, model, head=True)
    meta = load_metadata(store)
    if len(meta) != concepts.activations.shape[0]:
        raise MMConceptsError(f"{store} holds {len(meta)} samples but the dictionary was learnt "
                              f"on {concepts.activations.shape[0]}; learn it again")
    grounder = grounder_for(concepts, model, {"decode": decode, "apply_norm": apply_norm, "n_words": n_words,
                                              "vocabulary": vocabulary, "min_ratio": min_ratio,
                                              "exclude": [] if keep_token else token_words(concepts)}, meta)
    total, count = 0.0, 0
    for shard in iter_feature_shards(store, summary["layer"]):  # the mean feature, shard by shard
        total, count = total + shard.double().sum(dim=0), count + shard.shape[0]
    words = grounder.ground_dictionary(concepts.dictionary, activations=concepts.activations,
                                       base=(total / max(count, 1)).float())
    images = top_samples(concepts.activations, meta, n_images)
    grounding = {**grounder.settings(),
                 "concepts": [{"index": k, "words": words[k], "images": images[k]} for k in range(len(words))]}
    write_json(Path(path) / "grounding.json", _images_at(grounding, Path(path), to_stored=True))
    return grounding
