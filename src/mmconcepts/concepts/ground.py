"""Ground a learnt dictionary in words and images: :func:`ground` adds ``grounding.json`` to the folder written
by ``mmconcepts learn``: for every concept its words (decoded through the model's unembedding,
:mod:`mmconcepts.concepts.decoding`) and its most activating training samples (visual grounding).
"""

from __future__ import annotations

import os
from pathlib import Path

from mmconcepts.concepts.concept_set import ConceptSet, load_concepts, model_for, top_samples
from mmconcepts.concepts.images import copy_thumbnails, images_at
from mmconcepts.concepts.settings import GroundingSettings
from mmconcepts.errors import MMConceptsError
from mmconcepts.files import write_json

#: The part of a feature store's run record that ``grounding.json`` keeps (``"store"``), so a concepts folder
#: copied without its store still reads an image the way the store did (``explain``, ``steer``).
STORE_RECORD = ("model", "model_options", "revision", "family", "mode", "keep", "token", "tokens", "also",
                "instruction", "max_new_tokens", "min_new_tokens", "positions")


def grounder_for(concepts: ConceptSet, model, settings: GroundingSettings | None = None,
                 meta: list[dict] | None = None):
    """The :class:`~mmconcepts.concepts.decoding.WordGrounder` of a concepts folder: ``settings``, or those its
    ``grounding.json`` recorded."""
    from mmconcepts.concepts.decoding import WordGrounder, caption_vocabulary

    layer = str(concepts.summary.get("layer"))
    settings = (settings or GroundingSettings.from_json(concepts.grounding)).applied(concepts.positions,
                                                                                     concepts.n_concepts)
    allowed = None
    if settings.vocabulary == "captions":
        meta = meta if meta is not None else concepts.train_meta()
        allowed = caption_vocabulary(m.get("caption", "") for m in meta)
    return WordGrounder(model, settings, layer=layer, allowed=allowed,
                        exclude=[] if settings.keep_token else concepts.token_words())


def concept_words(concepts: ConceptSet, model, settings: GroundingSettings, meta: list[dict] | None = None,
                  top_images: list[list[dict]] | None = None, load_image=None, scores=None) -> list[list[dict]]:
    """Every concept's words ``[[{"word", "score"}, ...], ...]`` as ``settings`` read them: through the
    unembedding (:mod:`~mmconcepts.concepts.decoding`; ``model`` may be the head alone), or, for
    ``decode="caption"``, through the whole ``model`` over each concept's top training images (``top_images``,
    computed when not given, each loaded by ``load_image(entry)`` or from its file;
    :mod:`~mmconcepts.concepts.caption_words`), or from its token ``scores`` computed before
    (:func:`caption_token_scores`: the words of several cuts for the cost of one reading)."""
    meta = meta if meta is not None else concepts.train_meta()
    return _words(grounder_for(concepts, model, settings, meta), concepts, model, meta, top_images, load_image,
                  scores)


def _words(grounder, concepts: ConceptSet, model, meta: list[dict], top_images, load_image, scores):
    """:func:`concept_words` with its grounder built."""
    from mmconcepts.concepts.decoding import typical_strengths
    from mmconcepts.extract.features import mean_feature

    if grounder.decode == "caption":
        if scores is None:
            scores = caption_token_scores(concepts, model, meta, top_images, load_image)
        return grounder.words_of(scores)
    return grounder(concepts.directions, base=mean_feature(concepts.features, concepts.summary["layer"], concepts.token),
                    strengths=typical_strengths(concepts.activations),
                    points=getattr(concepts.dictionary, "concepts_are_points", False))


def caption_token_scores(concepts: ConceptSet, model, meta: list[dict] | None = None,
                         top_images: list[list[dict]] | None = None, load_image=None):
    """The ``K x V`` token scores of the caption decoding of ``concepts``
    (:func:`~mmconcepts.concepts.caption_words.caption_scores` over their top training images)."""
    from mmconcepts.concepts.caption_words import CAPTION_IMAGES, caption_scores

    if top_images is None:
        meta = meta if meta is not None else concepts.train_meta()
        top_images = top_samples(concepts.activations, meta, CAPTION_IMAGES)
    return caption_scores(concepts, model, top_images, load=load_image)


def ground(path: str | os.PathLike, model=None, settings: GroundingSettings | None = None, *, load_image=None,
           **fields) -> dict:
    """Ground every concept of a concepts folder in words and images; writes ``grounding.json``.

    Parameters
    ----------
    path : the concepts folder (``mmconcepts learn``).
    model : a loaded adapter, :class:`~mmconcepts.models.ModelOptions`, a model id/folder, or ``None``: the
        model the features were extracted with, as the store's run record says. Only the unembedding, the
        final norm and the tokenizer are read (:func:`~mmconcepts.models.head.load_head`), except by
        ``decode="caption"``, which reads the whole model over each concept's top images.
    settings : :class:`~mmconcepts.concepts.settings.GroundingSettings`, or its fields as keywords
        (``decode="paper"``, ``min_ratio=0``, ...). The token of interest and its ``also`` variants are
        not grounded words unless ``keep_token``.

    ``load_image(entry) -> PIL image`` loads a top image the caption decoding reads when it is not a file (the
    Noise-Imgs baseline's images are drawn in memory); ``None``: from its file.

    With ``copy_images``, a thumbnail of every concept image is written into ``path/images/`` and recorded as
    ``"thumbnail"`` (relative to ``path``) next to the image's link.

    Returns
    -------
    dict : the content of ``grounding.json`` (image paths absolute).

    Examples
    --------
    >>> from mmconcepts.concepts import load_concepts
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> from mmconcepts.decompose import learn
    >>> from mmconcepts.extract import extract
    >>> _ = write_dataset("shapes/train", n=160, seed=0)
    >>> _ = extract("shapes/train", "circle", out="runs/circle", layers=["norm"], mode="teacher", progress=False)
    >>> _ = learn("runs/circle", "norm", out="runs/concepts", n_concepts=8, seed=0)
    >>> grounding = ground("runs/concepts")       # with the model the store was read with (the shipped one)
    >>> [[w["word"] for w in concept["words"]] for concept in grounding["concepts"]]
    [[], ['large', 'big'], ['square'], ['left'], ['bottom'], [], ['orange'], ['red']]
    >>> concepts = load_concepts("runs/concepts")
    >>> concepts.words(7), concepts.images(7)[0]["caption"]
    (['red'], 'there is a star of small size in orange at the top , a star of big size in red on the right and ...')
    """
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
    from mmconcepts.extract.store import layer_width

    layer = str(concepts.summary["layer"])
    caption = settings.applied(concepts.positions, concepts.n_concepts).decode == "caption"
    if not caption and concepts.manifest and \
            layer_width(concepts.manifest, layer) != concepts.manifest["hidden_size"]:
        raise MMConceptsError(f"concepts of layer {layer} (width {layer_width(concepts.manifest, layer)}) have no words "
                              f"through the unembedding (width {concepts.manifest['hidden_size']}): ground them with "
                              "--decode caption, learn them with --no-ground, or on the projector or a "
                              "decoder layer")
    if caption:
        from mmconcepts.concepts.caption_words import CAPTION_IMAGES, check_caption_decoding

        check_caption_decoding(concepts)
        model = model_for(concepts, model)  # the whole model: the captions are read over the images
        tops = top_samples(concepts.activations, meta, max(settings.n_images, CAPTION_IMAGES))
    else:
        model = model_for(concepts, model, head=True)
        tops = top_samples(concepts.activations, meta, settings.n_images)
    grounder = grounder_for(concepts, model, settings, meta)
    words = _words(grounder, concepts, model, meta, tops, load_image, None)
    images = [t[:settings.n_images] for t in tops]
    if settings.copy_images:
        copy_thumbnails(images, path)
    K = concepts.dictionary.components_.shape[0]
    entries = []
    for k in range(len(words)):
        entry = {"index": k, "words": words[k], "images": images[k]}
        if concepts.signed:
            entry.update(component=k % K, sign=1 if k < K else -1)
        entries.append(entry)
    record = {key: value for key, value in concepts.manifest.items() if key in STORE_RECORD}
    grounding = {**grounder.settings(), "settings": settings.to_json(), "store": record, "concepts": entries}
    from mmconcepts.outputs import FolderLock

    with FolderLock(path):  # not beside a learn or another ground writing the same folder
        write_json(Path(path) / "grounding.json", images_at(grounding, Path(path), to_stored=True))
    return grounding
