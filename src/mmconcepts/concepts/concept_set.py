"""A concepts folder read back: :func:`load_concepts` returns a :class:`ConceptSet`, everything a later stage
needs (the dictionary, the training activations per concept, the summary, the grounding, the store it was
learnt from, and the model that store was read with: :func:`model_for`). Grounding itself (writing
``grounding.json``) is :func:`mmconcepts.concepts.ground.ground`.

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
from mmconcepts.files import resolve_field
from mmconcepts.concepts.activations import is_sparse, read_activations, top_rows
from mmconcepts.concepts.images import images_at, missing_images
from mmconcepts.records import Grounding, Summary


#: A sparse folder's activations are handed out dense (:attr:`ConceptSet.activations`) up to this many
#: entries (``N x K``); above it they stay sparse, and only the readers of :mod:`.activations` apply.
DENSE_LIMIT = 1 << 24


#: Image-token rows: how many top patches a concept's top images are read from, per image asked for.
PATCHES_PER_IMAGE = 16


def top_samples(activations, meta: list[dict], n_images: int = 5) -> list[list[dict]]:
    """Visual grounding: the ``n_images`` most activating samples of every concept (column of ``activations``,
    dense or sparse: :func:`~mmconcepts.concepts.activations.top_rows`). For image-token rows
    (:mod:`~mmconcepts.concepts.pooling`), the top *patches* in distinct images (each image's best patch, with
    its ``patch`` index and ``box``), read among the concept's ``PATCHES_PER_IMAGE x n_images`` top patches."""
    from mmconcepts.concepts.pooling import is_image_rows

    def entry(r, v):
        row = {"id": meta[r]["id"], "image": meta[r]["image"], "caption": meta[r].get("caption", ""),
               "activation": round(float(v), 5)}
        if "patch" in meta[r]:
            row.update(patch=meta[r]["patch"], box=meta[r].get("box"))
        return row

    if not is_image_rows(meta):
        return [[entry(r, v) for r, v in column] for column in top_rows(activations, n_images)]
    out = []
    for column in top_rows(activations, PATCHES_PER_IMAGE * n_images):
        seen, kept = set(), []
        for r, v in column:
            key = (meta[r].get("index"), meta[r].get("token"))
            if key not in seen and len(kept) < n_images:
                seen.add(key)
                kept.append(entry(r, v))
        out.append(kept)
    return out


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
        """``N x n_concepts`` activations of the training samples, one column a concept: a dense tensor, or,
        for a folder stored sparse with more than :data:`DENSE_LIMIT` entries, a ``torch.sparse_csr`` tensor
        (read it with :func:`~mmconcepts.concepts.activations.activation_column`,
        :func:`~mmconcepts.concepts.activations.positive_means`, :func:`top_samples`)."""
        from mmconcepts.decompose.base import one_sided

        A = self.raw_activations
        if is_sparse(A):
            return A.to_dense() if A.shape[0] * A.shape[1] <= DENSE_LIMIT else A
        return one_sided(A, self.signed)

    @property
    def directions(self):
        """``n_concepts x D``: each concept's direction (or point) in the feature space."""
        from mmconcepts.decompose.base import concept_directions

        return concept_directions(self.dictionary.components_, self.signed)

    def encode(self, Z):
        """The concept activations of features ``Z`` (``N x n_concepts``)."""
        from mmconcepts.decompose.base import one_sided

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
    def positions(self) -> str:
        """Where the store read its rows: ``"token"`` (the word's state) or ``"image"`` (every image token's)."""
        return str(self.manifest.get("positions") or "token")

    @property
    def pool(self) -> str:
        """How an image's explanation pools its patches' activations (``learn --pool``,
        :mod:`~mmconcepts.concepts.pooling`); ``"mean"`` for a folder that does not say (made before the
        setting, when images were explained by the mean)."""
        from mmconcepts.concepts.pooling import check_pool

        return check_pool(str(self.summary.get("pool") or "mean"))

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


def check_concepts_folder(path: str | os.PathLike, summary: Summary, dictionary, activations,
                          grounding: dict | None) -> None:
    """The files of a concepts folder agree: the dictionary's K and D and the activations' shape with
    ``summary.json``, the provenance in the dictionary's safetensors header (layer, token, ...) with
    ``summary.json``, and ``grounding.json`` has exactly one entry per concept."""
    from mmconcepts.decompose.persistence import PROVENANCE, read_provenance

    path = Path(path)
    fix = "run `mmconcepts learn` again (or copy the whole folder from one run)"
    K, D = (int(n) for n in dictionary.components_.shape)
    if (K, D) != (summary.n_concepts, summary.hidden_size):
        raise MMConceptsError(f"{path}: the dictionary has {K} concepts of width {D}, summary.json says "
                              f"{summary.n_concepts} of width {summary.hidden_size}; {fix}")
    if tuple(activations.shape) != (summary.n_samples, K):
        raise MMConceptsError(f"{path}: activations.safetensors is {tuple(activations.shape)}, summary.json says "
                              f"{summary.n_samples} samples x {K} concepts; {fix}")
    recorded = read_provenance(path)
    for key in PROVENANCE:
        if key in recorded and recorded[key] != str(getattr(summary, key)):
            raise MMConceptsError(f"{path}: summary.json says {key}={getattr(summary, key)!r}, but the dictionary was "
                                  f"learnt with {key}={recorded[key]!r}; {fix}")
    if grounding is not None:
        expected = 2 * K if getattr(dictionary, "signed_activations", False) else K
        n = len(grounding.get("concepts") or [])
        if n != expected:
            raise MMConceptsError(f"{path / 'grounding.json'} grounds {n} concepts, the dictionary has {expected}; "
                                  "ground the folder again (`mmconcepts learn --overwrite`)")


def load_concepts(path: str | os.PathLike, require_grounding: bool = False) -> ConceptSet:
    """Read a concepts folder written by ``mmconcepts learn``, its files checked against each other.

    ``require_grounding``: refuse a folder without ``grounding.json`` (the words and images of its concepts).
    :func:`~mmconcepts.decompose.learn` and :func:`~mmconcepts.concepts.ground` show a folder read back.

    Examples
    --------
    >>> load_concepts("runs/nothing")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: concepts folder not found: runs/nothing; create it with `mmconcepts learn`
    """
    from mmconcepts.decompose import load_dictionary

    path = Path(path)
    if not path.is_dir():
        raise MMConceptsError(f"concepts folder not found: {path}; create it with `mmconcepts learn`")
    summary = _summary_record(path)
    dictionary = load_dictionary(path)
    activations = read_activations(path / "activations.safetensors")
    if is_sparse(activations) and getattr(dictionary, "signed_activations", False):
        raise MMConceptsError(f"{path / 'activations.safetensors'} is sparse, but {summary.method} has signed "
                              "activations, which are stored dense; run `mmconcepts learn` again")
    grounding = read_grounding(path)
    if require_grounding and grounding is None:
        raise MMConceptsError(f"{path} has no grounding.json; run `mmconcepts learn` without --no-ground")
    check_concepts_folder(path, summary, dictionary, activations, grounding)
    return ConceptSet(path, dictionary, summary.to_json(), activations, grounding)


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
