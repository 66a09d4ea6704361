"""Ground a learnt dictionary in words and images, and read a concepts folder back.

:func:`ground` adds ``grounding.json`` to the folder written by ``mmconcepts learn``: for every concept its
words (decoded through the model's unembedding, :mod:`mmconcepts.grounding.text`) and its most activating
training samples (visual grounding). :func:`load_concepts` returns everything a later stage needs.

Concepts and components
-----------------------
A dictionary's components ``u_k`` are its concepts, read on their positive side, when its activations are
non-negative (Semi-NMF, NMF, K-Means, Simple, the sparse autoencoder). A dictionary with signed activations
(PCA: ``signed_activations = True``) has two concepts per component: ``+u_k`` with activation ``max(v_k, 0)``
and ``-u_k`` with activation ``max(-v_k, 0)``, concept ``k`` and concept ``K + k``. Every later stage works
on concepts (:meth:`ConceptSet.encode`), so a sample strongly on the negative side of a PCA component is
explained by, and grounded in, that side's words.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import resolve_field, write_json
from mmconcepts.grounding.images import copy_thumbnails, images_at, missing_images
from mmconcepts.grounding.settings import GroundingSettings
from mmconcepts.records import Grounding, Summary, check_concepts_folder

#: The part of a feature store's run record that ``grounding.json`` keeps (``"store"``), so a concepts folder
#: copied without its store still reads an image the way the store did (``explain``, ``steer``).
STORE_RECORD = ("model", "model_options", "revision", "family", "mode", "keep", "token", "tokens", "also",
                "instruction", "max_new_tokens", "min_new_tokens")


def one_sided(activations, signed: bool):
    """``N x K`` activations as concept activations: unchanged, or ``[max(V, 0), max(-V, 0)]`` (``N x 2K``)."""
    import torch

    A = activations.float()
    return torch.cat([A.clamp(min=0), (-A).clamp(min=0)], dim=1) if signed else A


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
    """A concepts folder: the dictionary, its training activations (per concept), summary and grounding."""

    path: Path
    dictionary: object
    summary: dict
    raw_activations: object
    grounding: dict | None

    @property
    def signed(self) -> bool:
        """Whether each component is two concepts (its positive and negative side)."""
        return bool(getattr(self.dictionary, "signed_activations", False))

    @property
    def activations(self):
        """``N x n_concepts`` activations of the training samples, one column a concept."""
        return one_sided(self.raw_activations, self.signed)

    @property
    def directions(self):
        """``n_concepts x D``: each concept's direction (or point) in the feature space."""
        import torch

        U = self.dictionary.components_.float()
        return torch.cat([U, -U]) if self.signed else U

    def encode(self, Z):
        """The concept activations of features ``Z`` (``N x n_concepts``)."""
        return one_sided(self.dictionary.transform(Z), self.signed)

    @property
    def features(self) -> Path:
        """The feature store the dictionary was learnt from (found relative to this folder when it moved)."""
        return resolve_field(self.summary, "features", self.path)

    @property
    def manifest(self) -> dict:
        """The run record of that store; when it is gone, the part of it ``grounding.json`` keeps (how it read
        its images, its model: ``"store"``), else ``{}``."""
        from mmconcepts.extract.store import read_manifest

        if (self.features / "manifest.json").is_file():
            return read_manifest(self.features)
        return dict((self.grounding or {}).get("store") or {})

    @property
    def n_concepts(self) -> int:
        return int(self.directions.shape[0])

    def words(self, k: int) -> list[str]:
        if self.grounding is None:
            return []
        return [w["word"] for w in self.grounding["concepts"][k]["words"]]

    def images(self, k: int) -> list[dict]:
        """Concept ``k``'s top images: ``{"id", "image" (the original's path), "caption", "activation"}``, and
        ``"thumbnail"`` (the copy this folder carries) when it was grounded with ``copy_images``."""
        if self.grounding is None:
            return []
        return self.grounding["concepts"][k]["images"]

    def missing_images(self) -> str | None:
        """One line naming the top images found neither at their original place nor as a carried thumbnail,
        and where they were looked for; ``None`` when every one is found (:func:`missing_images`)."""
        return missing_images(self.grounding, self.path)

    def word_sets(self) -> list[list[str]]:
        return [self.words(k) for k in range(self.n_concepts)]

    @property
    def token(self) -> str | None:
        """The word of interest the dictionary was learnt for (one word's rows of its store)."""
        return self.summary.get("token")

    def token_words(self) -> list[str]:
        """The token of interest and its ``also`` variants: words no concept is grounded in (they say nothing
        about a concept: every concept of "dog" predicts "dog" and "dogs")."""
        from mmconcepts.extract.store import store_tokens

        also = store_tokens(self.manifest).get(self.token, []) if self.manifest else []
        return [w for w in [self.token, *also] if w]

    def train_meta(self) -> list[dict]:
        """The metadata rows of the training samples (of the dictionary's word)."""
        from mmconcepts.extract.features import load_metadata

        return load_metadata(self.features, self.token)


def _summary_record(path: Path) -> Summary:
    if not (path / Summary.FILE).exists():
        raise MMConceptsError(f"summary.json missing in {path}; is this a folder made by `mmconcepts learn`?")
    return Summary.read(path)


def read_summary(path: str | os.PathLike) -> dict:
    """The ``summary.json`` of a concepts folder, checked (:class:`~mmconcepts.records.Summary`)."""
    return _summary_record(Path(path)).to_json()


def read_grounding(path: str | os.PathLike) -> dict | None:
    """The ``grounding.json`` of a concepts folder, its image paths resolved (``None`` when it has none)."""
    path = Path(path)
    if not (path / "grounding.json").exists():
        return None
    return images_at(Grounding.read(path).to_json(), path, to_stored=False)


def load_concepts(path: str | os.PathLike, require_grounding: bool = False) -> ConceptSet:
    """Read a concepts folder written by ``mmconcepts learn``."""
    from safetensors.torch import load_file

    from mmconcepts.decompose import load_dictionary

    path = Path(path)
    if not path.is_dir():
        raise MMConceptsError(f"concepts folder not found: {path}; create it with `mmconcepts learn`")
    summary = _summary_record(path)
    dictionary = load_dictionary(path)
    try:
        activations = load_file(str(path / "activations.safetensors"))["activations"]
    except Exception:  # missing or truncated file: safetensors raises several error types
        raise MMConceptsError(f"cannot read {path / 'activations.safetensors'}; run `mmconcepts learn` again") \
            from None
    grounding = read_grounding(path)
    if require_grounding and grounding is None:
        raise MMConceptsError(f"{path} has no grounding.json; run `mmconcepts learn` without --no-ground")
    check_concepts_folder(path, summary, dictionary, activations, grounding)
    return ConceptSet(path, dictionary, summary.to_json(), activations, grounding)


def grounder_for(concepts: ConceptSet, model, settings: GroundingSettings | None = None,
                 meta: list[dict] | None = None):
    """The :class:`~mmconcepts.grounding.text.WordGrounder` of a concepts folder: ``settings``, or those its
    ``grounding.json`` recorded."""
    from mmconcepts.grounding.text import WordGrounder, caption_vocabulary

    settings = settings or GroundingSettings.from_json(concepts.grounding)
    allowed = None
    if settings.vocabulary == "captions":
        meta = meta if meta is not None else concepts.train_meta()
        allowed = caption_vocabulary(m.get("caption", "") for m in meta)
    return WordGrounder(model, settings, layer=str(concepts.summary.get("layer")), allowed=allowed,
                        exclude=[] if settings.keep_token else concepts.token_words())


def model_for(concepts: ConceptSet, model=None, head: bool = False):
    """The model a later stage uses for a concepts folder: ``model`` if it is a loaded adapter; else the
    :class:`~mmconcepts.models.ModelOptions` (or id) ``model``, every unset option following the feature
    store's run record. ``head``: only the unembedding, final norm and tokenizer (decoding words)."""
    from mmconcepts.models import ModelAdapter
    from mmconcepts.models.options import as_options

    if isinstance(model, ModelAdapter):
        return model
    options = as_options(model).following(concepts.manifest or {"model": concepts.summary["model"]})
    return options.load_head() if head else options.load()


def mean_feature(store, layer, token: str | None = None):
    """The mean feature of one layer of a store (of one word's rows), read shard by shard (float64 sums)."""
    from mmconcepts.extract.features import iter_feature_shards

    total, count = 0.0, 0
    for shard in iter_feature_shards(store, layer, token):
        total, count = total + shard.double().sum(dim=0), count + shard.shape[0]
    return (total / max(count, 1)).float()


def ground(path: str | os.PathLike, model=None, settings: GroundingSettings | None = None, **fields) -> dict:
    """Ground every concept of a concepts folder in words and images; writes ``grounding.json``.

    Parameters
    ----------
    path : the concepts folder (``mmconcepts learn``).
    model : a loaded adapter, :class:`~mmconcepts.models.ModelOptions`, a model id/folder, or ``None``: the
        model the features were extracted with, as the store's run record says. Only the unembedding, the
        final norm and the tokenizer are read (:func:`~mmconcepts.models.head.load_head`).
    settings : :class:`~mmconcepts.grounding.settings.GroundingSettings`, or its fields as keywords
        (``decode="paper"``, ``min_ratio=0``, ...). The token of interest and its ``also`` variants are
        not grounded words unless ``keep_token``.

    With ``copy_images``, a thumbnail of every concept image is written into ``path/images/`` and recorded as
    ``"thumbnail"`` (relative to ``path``) next to the image's link.

    Returns
    -------
    dict : the content of ``grounding.json`` (image paths absolute).
    """
    from mmconcepts.grounding.text import typical_strengths

    if settings is None:
        settings = GroundingSettings(**fields)
    elif fields:
        raise MMConceptsError("give the grounding settings either as settings= or as keywords, not both")
    concepts = load_concepts(path)
    store = concepts.features
    meta = concepts.train_meta()
    if len(meta) != concepts.raw_activations.shape[0]:
        raise MMConceptsError(f"{store} holds {len(meta)} samples but the dictionary was learnt "
                              f"on {concepts.raw_activations.shape[0]}; learn it again")
    model = model_for(concepts, model, head=True)
    grounder = grounder_for(concepts, model, settings, meta)
    activations = concepts.activations
    words = grounder(concepts.directions, base=mean_feature(store, concepts.summary["layer"], concepts.token),
                     strengths=typical_strengths(activations),
                     points=getattr(concepts.dictionary, "concepts_are_points", False))
    images = top_samples(activations, meta, settings.n_images)
    if settings.copy_images:
        copy_thumbnails(images, path)
    K = concepts.dictionary.components_.shape[0]
    entries = []
    for k in range(len(words)):
        entry = {"index": k, "words": words[k], "images": images[k]}
        if concepts.signed:
            entry.update(component=k % K, sign=1 if k < K else -1)
        entries.append(entry)
    store = {key: value for key, value in concepts.manifest.items() if key in STORE_RECORD}
    grounding = {**grounder.settings(), "settings": settings.to_json(), "store": store, "concepts": entries}
    from mmconcepts.outputs import FolderLock

    with FolderLock(path):  # not beside a learn or another ground writing the same folder
        write_json(Path(path) / "grounding.json", images_at(grounding, Path(path), to_stored=True))
    return grounding
