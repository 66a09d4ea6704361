"""Ground a learnt dictionary in words and images, and read a concepts folder back.

:func:`ground` adds ``grounding.json`` to the folder written by ``mmconcepts learn``: for every concept its
words (decoded through the model's unembedding, :mod:`mmconcepts.grounding.text`) and its most activating
training samples (visual grounding). :func:`load_concepts` returns everything a later stage needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
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
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MMConceptsError(f"{path.name} missing in {path.parent}; is this a folder made by `mmconcepts learn`?") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MMConceptsError(f"{path} is corrupt; run `mmconcepts learn` again") from None


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
    if require_grounding and grounding is None:
        raise MMConceptsError(f"{path} has no grounding.json; run `mmconcepts learn` without --no-ground")
    return ConceptSet(path, dictionary, summary, activations, grounding)


def grounder_for(summary: dict, model, settings: dict | None = None, meta: list[dict] | None = None):
    """The :class:`~mmconcepts.grounding.text.WordGrounder` of a concepts folder (its saved settings)."""
    from mmconcepts.extract.store import load_metadata
    from mmconcepts.grounding.text import WordGrounder, caption_vocabulary

    settings = dict(settings or {})
    allowed = None
    if settings.get("vocabulary", "all") == "captions":
        meta = meta if meta is not None else load_metadata(summary["features"])
        allowed = caption_vocabulary(m.get("caption", "") for m in meta)
    return WordGrounder(model, decode=settings.get("decode", "effect"), apply_norm=settings.get("apply_norm"),
                        layer=str(summary.get("layer")), n_words=settings.get("n_words", 10),
                        top_k=settings.get("top_k", 50), allowed=allowed,
                        min_ratio=settings.get("min_ratio", MIN_RATIO),
                        exclude=settings.get("exclude", [summary.get("token", "")]))


def ground(path: str | os.PathLike, model=None, decode: str = "effect", apply_norm: bool | None = None,
           n_words: int = 10, n_images: int = 5, vocabulary: str = "all", min_ratio: float | None = MIN_RATIO,
           keep_token: bool = False, device: str = "auto") -> dict:
    """Ground every concept of a concepts folder in words and images; writes ``grounding.json``.

    ``model`` is a loaded adapter, a model id/folder, or ``None`` for the model named in the summary.
    ``decode``, ``apply_norm``, ``n_words`` and ``min_ratio`` are those of
    :class:`~mmconcepts.grounding.text.WordGrounder`. ``vocabulary="all"`` allows any word of the tokenizer,
    ``"captions"`` only words the model used in the store's captions. The token of interest is not a
    grounded word unless ``keep_token``.
    """
    from mmconcepts.extract.store import iter_feature_shards, load_metadata
    from mmconcepts.grounding.text import check_settings
    from mmconcepts.models import as_adapter

    if vocabulary not in ("captions", "all"):
        raise MMConceptsError(f"unknown vocabulary {vocabulary!r}: choose captions or all")
    check_settings(decode, min_ratio, n_words)
    concepts = load_concepts(path)
    summary = concepts.summary
    model = as_adapter(model if model is not None else summary["model"], device=device)
    meta = load_metadata(summary["features"])
    if len(meta) != concepts.activations.shape[0]:
        raise MMConceptsError(f"{summary['features']} holds {len(meta)} samples but the dictionary was learnt "
                              f"on {concepts.activations.shape[0]}; learn it again")
    grounder = grounder_for(summary, model, {"decode": decode, "apply_norm": apply_norm, "n_words": n_words,
                                             "vocabulary": vocabulary, "min_ratio": min_ratio,
                                             "exclude": [] if keep_token else [summary.get("token", "")]}, meta)
    total, count = 0.0, 0
    for shard in iter_feature_shards(summary["features"], summary["layer"]):  # the mean feature, shard by shard
        total, count = total + shard.double().sum(dim=0), count + shard.shape[0]
    words = grounder.ground_dictionary(concepts.dictionary, activations=concepts.activations,
                                       base=(total / max(count, 1)).float())
    images = top_samples(concepts.activations, meta, n_images)
    grounding = {**grounder.settings(),
                 "concepts": [{"index": k, "words": words[k], "images": images[k]} for k in range(len(words))]}
    tmp = Path(path) / "grounding.json.tmp"
    tmp.write_text(json.dumps(grounding, indent=1))
    os.replace(tmp, Path(path) / "grounding.json")
    return grounding
