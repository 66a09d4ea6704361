"""Concepts named by a captioning model from their top images (``evaluate --autointerp``).

The peers name a feature by showing its top examples to a large model and asking (lmms-lab with
LLaVA-OV-72B, SAEBench, Neuronpedia). Here the namer is any image-text-to-text model, by default the studied
model itself: it captions the concept's top training images and a seeded sample of random ones, and the name
is the words its captions of the top images hold more often than those of the random images
(:func:`contrastive_words`), most telling first. The same captioner then writes the captions the detection
score reads on the test images, and :mod:`.scores` scores each name, next to the concept's words through the
unembedding.

Every image is captioned once per evaluation (:class:`Captioner` keeps them), in batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

from mmconcepts.data.truth import normalise
from mmconcepts.evaluation.autointerp.scores import (AutointerpResult, ConceptName, caption_words, detection,
                                                     name_truth)
from mmconcepts.evaluation.autointerp.settings import AutointerpSettings

__all__ = ["Captioner", "autointerp_evaluation", "contrastive_words", "name_concepts"]


def contrastive_words(top_captions: Sequence[str], random_captions: Sequence[str], *, exclude=(),
                      n_words: int = 3) -> list[str]:
    """The words that set the top images' captions apart from the random images': held by at least half of
    the top captions and by a larger share of them than of the random captions, ordered by that difference
    (then alphabetically); stopwords and ``exclude`` (the word of interest, held by every caption) left out.

    Parameters
    ----------
    top_captions, random_captions : captions of the concept's top images and of random images.
    exclude : words never part of a name.
    n_words : words kept at most.

    Returns
    -------
    list of str

    Examples
    --------
    >>> contrastive_words(["a red circle", "a big red circle"], ["a blue circle", "a red square", "a circle"],
    ...                   exclude=["circle"])
    ['red', 'big']
    """
    from mmconcepts.concepts.vocabulary import stopwords

    if not top_captions:
        return []
    skip = stopwords() | {normalise(w) for w in exclude}
    top = [caption_words(c) for c in top_captions]
    rand = [caption_words(c) for c in random_captions]
    scores = {}
    for word in set().union(*top) - skip:
        share_top = sum(word in ws for ws in top) / len(top)
        share_rand = sum(word in ws for ws in rand) / len(rand) if rand else 0.0
        if share_top >= 0.5 and share_top > share_rand:
            scores[word] = share_top - share_rand
    return sorted(scores, key=lambda w: (-scores[w], w))[:n_words]


class Captioner:
    """A namer model's captions of images, each image captioned once (by path), in batches.

    Parameters
    ----------
    adapter : the namer (a loaded :class:`~mmconcepts.models.ModelAdapter`).
    max_new_tokens : caption length.
    """

    def __init__(self, adapter, max_new_tokens: int = 50):
        self.adapter = adapter
        self.max_new_tokens = max_new_tokens
        self._captions: dict[str, str] = {}

    def __call__(self, images: Sequence[str]) -> list[str]:
        """The captions of the image paths ``images`` (the new ones captioned together)."""
        from mmconcepts.data.readers import load_image

        new = [p for p in dict.fromkeys(map(str, images)) if p not in self._captions]
        if new:
            captions = self.adapter.caption([load_image(p) for p in new], max_new_tokens=self.max_new_tokens)
            self._captions.update(zip(new, captions))
        return [self._captions[str(p)] for p in images]


def _random_rows(n_rows: int, n: int, seed: int) -> list[int]:
    import torch

    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))[:n].tolist()


def name_concepts(concepts, test_activations, test_meta: Sequence[dict], captioner: Captioner,
                  settings: AutointerpSettings) -> list[ConceptName]:
    """Name every concept of a concepts folder from its top training images and score both of its names.

    Parameters
    ----------
    concepts : a grounded :class:`~mmconcepts.concepts.concept_set.ConceptSet`.
    test_activations : ``(N_test, n_concepts)`` its activations of the test samples.
    test_meta : the test samples' metadata rows (``image``, and on ShapesWorld ``attributes``).
    captioner : the namer's :class:`Captioner`.
    settings : :class:`~.settings.AutointerpSettings`.

    Returns
    -------
    list of :class:`~.scores.ConceptName`, one per concept.
    """
    from mmconcepts.concepts.activations import top_rows

    train_meta, token = concepts.train_meta(), concepts.token
    # each concept's top rows among its active ones, read once for all concepts (dense or sparse form)
    train_tops = [[r for r, v in column if v > 0] for column in top_rows(concepts.activations, settings.n_top)]
    test_tops = [[r for r, v in column if v > 0] for column in top_rows(test_activations, settings.n_detect)]
    random_train = _random_rows(len(train_meta), settings.n_random, settings.seed)
    random_test = _random_rows(len(test_meta), settings.n_random, settings.seed + 1)
    grounded = (concepts.grounding or {}).get("concepts", [])
    names = []
    for k in range(concepts.n_concepts):
        words = [w["word"] for w in grounded[k].get("words", [])][:settings.n_words] if k < len(grounded) else []
        top = train_tops[k]
        top_captions = captioner([train_meta[r]["image"] for r in top])
        others = [r for r in random_train if r not in top]
        name = contrastive_words(top_captions, captioner([train_meta[r]["image"] for r in others]),
                                 exclude=[token], n_words=settings.n_words) if top else []
        test_top = test_tops[k]
        test_top_captions = captioner([test_meta[r]["image"] for r in test_top])
        test_random = captioner([test_meta[r]["image"] for r in random_test if r not in test_top])
        records = [train_meta[r].get("attributes") for r in top]
        truth = all(isinstance(r, Mapping) for r in records) and bool(records)
        names.append(ConceptName(
            index=k, name=name, words=words,
            name_detection=detection(name[:1], test_top_captions, test_random) if name else None,
            word_detection=detection(words[:1], test_top_captions, test_random),
            name_truth=name_truth(name, records, token) if truth and name else None,
            word_truth=name_truth(words[:1], records, token) if truth else None,
            top_captions=top_captions))
    return names


def autointerp_evaluation(folders: Mapping[str, object], test_features, test_meta: Sequence[dict], namer,
                          settings: AutointerpSettings | None = None, *, namer_id: str | None = None
                          ) -> AutointerpResult:
    """Name and score the concepts of every compared method (the same captions serve them all).

    Parameters
    ----------
    folders : ``{method: ConceptSet}``.
    test_features : ``(N_test, D)`` the test samples' features at the concepts' layer.
    test_meta : their metadata rows.
    namer : the loaded namer adapter (the studied model, or ``settings.namer``).
    settings : :class:`~.settings.AutointerpSettings`.
    namer_id : what the namer is called in ``autointerp.json`` (default: the adapter's model id).

    Returns
    -------
    :class:`~.scores.AutointerpResult`
    """
    settings = settings or AutointerpSettings()
    captioner = Captioner(namer, settings.max_new_tokens)
    methods = {m: name_concepts(cs, cs.encode(test_features), test_meta, captioner, settings)
               for m, cs in folders.items()}
    truth = any(n.word_truth is not None for names in methods.values() for n in names)
    return AutointerpResult(namer=str(namer_id or getattr(namer, "model_id", "")), ground_truth=truth,
                            methods=methods, settings=asdict(settings))
