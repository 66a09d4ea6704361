"""The extended concept-quality metrics of one concepts folder, in one call (``evaluate --extended``).

:func:`extended_metrics` gathers, as one flat row (:data:`EXTENDED_METRICS`, rounded to 4 decimals):

* words (always): ``words_per_concept``, ``empty_concepts``, ``overlap_strict``
  (:mod:`~mmconcepts.evaluation.grounding.overlap`) and, on ShapesWorld, ``grounding_precision_top1/3_strict``
  (:func:`~mmconcepts.evaluation.grounding.ground_truth.grounding_precision` with ``strict=True``): an empty
  concept counts as a miss;
* fixed words: the same dictionary grounded again with ``n_words = n`` and ``min_ratio = 0`` (the folder's
  other grounding settings kept, nothing written: :func:`reground_words`), for ``n`` in ``fixed_words``:
  ``words_per_concept_words<n>``, ``overlap_words<n>`` and on ShapesWorld
  ``grounding_precision_top1/3_words<n>``, both strict, closer to the paper's protocol of a fixed number of
  words. ``min_ratio = 0`` still keeps only the tokens a concept promotes, so ``n`` is a ceiling: under the
  ``effect`` decoding a concept that raises one token keeps one word (on the demo Semi-NMF's concepts keep
  1.35 words at ``n = 10``, PCA's 8.9), which ``words_per_concept_words<n>`` shows beside the scores;
* on ShapesWorld, coverage per attribute kind (:mod:`~mmconcepts.evaluation.extended.coverage`:
  ``coverage_token``, ``coverage_token_colour``, ..., ``coverage_other_shape``, ...) of the training
  activations, and k-sparse probing (:mod:`~mmconcepts.evaluation.extended.probing`: ``probing_top1_colour``,
  ...);
* ``stability`` and ``stability_halves`` (:mod:`~mmconcepts.evaluation.extended.stability`): the folder's
  dictionary (its seed ``s``) against a fit from seed ``s + 1`` on the training features, and fits on two halves.

What to compute is :class:`ExtendedSettings`; the row is an :class:`ExtendedRow`.

A metric that does not apply is absent (no ShapesWorld ground truth: no precision, coverage or probing).

Examples
--------
Eight concepts of "circle" learnt on 160 ShapesWorld images, scored on 40 test images (21 samples):

>>> from mmconcepts.concepts import ground
>>> from mmconcepts.data.shapesworld import write_dataset
>>> from mmconcepts.decompose import learn
>>> from mmconcepts.extract import extract, load_features
>>> for split, n in (("train", 160), ("test", 40)):
...     _ = write_dataset(f"shapes/{split}", n=n, seed=0, split=split)
...     _ = extract(f"shapes/{split}", "circle", out=f"runs/{split}", layers=["norm"], mode="teacher",
...                 progress=False)
>>> _ = learn("runs/train", "norm", out="runs/concepts", n_concepts=8, seed=0)
>>> _ = ground("runs/concepts")
>>> Z_test, test_meta = load_features("runs/test", "norm")
>>> row = extended_metrics("runs/concepts", Z_test, test_meta, stability=False, fixed_words=(3,))
>>> row["grounding_precision_top1_strict"], row["overlap_words3"], row["probing_top1_size"]
(0.7143, 0.25, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from mmconcepts.evaluation.extended.coverage import COVERAGE_KEYS
from mmconcepts.evaluation.extended.probing import PROBED_ATTRIBUTES
from mmconcepts.evaluation.rows import Row
from mmconcepts.params import Boolean, Interval, Many, param, validate

__all__ = ["EXTENDED_METRICS", "ExtendedRow", "ExtendedSettings", "extended_metrics", "reground_words"]

_FIXED = (3, 10)
_KS = (1, 3)

#: The keys of :func:`extended_metrics` with its default ``fixed_words`` and the probes' ``k`` (1, 3).
EXTENDED_METRICS = (
    "words_per_concept", "empty_concepts", "overlap_strict", "grounding_precision_top1_strict",
    "grounding_precision_top3_strict",
    *(f"{m}_words{n}" for n in _FIXED for m in ("words_per_concept", "overlap", "grounding_precision_top1",
                                                  "grounding_precision_top3")),
    *COVERAGE_KEYS,
    *(f"probing_{p}_{a}" for a in PROBED_ATTRIBUTES
      for p in (*(f"top{k}" for k in _KS), "raw", *(f"random{k}" for k in _KS))),
    "stability", "stability_halves",
)


@dataclass(frozen=True)
class ExtendedSettings:
    """What :func:`extended_metrics` computes.

    Parameters
    ----------
    seed : seed of the probes' random directions (stability uses the dictionary's own seed, see the module doc).
    stability : compute the stability metrics (refits the method three times).
    probing : compute the sparse probes (on ShapesWorld).
    fixed_words : the fixed numbers of words to ground again with (``()``: none, no model needed).

    Examples
    --------
    >>> ExtendedSettings(fixed_words=[10]).fixed_words
    (10,)
    """

    seed: int = param(0, flag=None, constraint=Interval(int, 0), help="seed of the probes' random directions")
    stability: bool = param(True, flag=None, constraint=Boolean(), help="compute the stability metrics")
    probing: bool = param(True, flag=None, constraint=Boolean(), help="compute the sparse probes")
    fixed_words: tuple[int, ...] = param(_FIXED, flag=None, constraint=Many(Interval(int, 1), empty=True),
                                         help="the fixed numbers of words to ground again with")

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True, eq=False)
class ExtendedRow(Row):
    """The extended metrics of one concepts folder: ``{metric: value}`` in :data:`EXTENDED_METRICS` order, each
    rounded to 4 decimals, a metric that does not apply absent (its keys depend on :class:`ExtendedSettings`,
    so they are held as a mapping, not as fields).

    Examples
    --------
    >>> row = ExtendedRow({"overlap_strict": 0.25, "words_per_concept": 2.0})
    >>> list(row), row["overlap_strict"]
    (['words_per_concept', 'overlap_strict'], 0.25)
    """

    values: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        order = {key: i for i, key in enumerate(EXTENDED_METRICS)}
        ordered = sorted(self.values.items(), key=lambda kv: order.get(kv[0], len(order)))
        object.__setattr__(self, "values", {k: round(float(v), 4) for k, v in ordered if math.isfinite(float(v))})

    def to_json(self) -> dict:
        return dict(self.values)


def reground_words(concepts, model, n_words: int, *, min_ratio: float | None = 0.0,
                   meta: list[dict] | None = None, scores=None) -> list[list[str]]:
    """The words of every concept grounded again with ``n_words`` and ``min_ratio``; nothing is written.

    Every other grounding setting is the one the folder's ``grounding.json`` recorded, and the words are
    computed as :func:`~mmconcepts.concepts.ground.ground` computes them (same base, strengths and
    excluded words), so the recorded ``n_words`` and ``min_ratio`` give back the folder's own words.

    Parameters
    ----------
    concepts : ConceptSet
        A grounded concepts folder read back (:func:`~mmconcepts.concepts.concept_set.load_concepts`).
    model : ModelAdapter
        A loaded adapter of the folder's model (its head is enough).
    n_words : int
        The most words per concept.
    min_ratio : float or None
        The relative cut (``0``: every word the concept promotes, up to ``n_words``; ``None``: no cut).
    meta : list of dict, optional
        The training metadata (read from the store when needed and not given).
    scores : tensor, optional
        A caption-read folder's token scores computed before
        (:func:`~mmconcepts.concepts.ground.caption_token_scores`): read again at every cut, not recomputed.

    Returns
    -------
    list of list of str
        The words of each concept.
    """
    from mmconcepts.concepts.ground import concept_words
    from mmconcepts.concepts.settings import GroundingSettings

    settings = replace(GroundingSettings.from_json(concepts.grounding), n_words=n_words, min_ratio=min_ratio)
    return [[w["word"] for w in ws] for ws in concept_words(concepts, model, settings, meta, scores=scores)]


def _stability(cs, Z_train) -> dict:
    """The folder's dictionary against a fit from the next seed, and fits on two halves, as learnt."""
    from mmconcepts.evaluation.extended.stability import stability

    summary = cs.summary
    params = {k: v for k, v in (summary.get("params") or {}).items()
              if k not in {"n_concepts", "seed", "random_state"}}
    if summary.get("relative_l1") is not None:
        params.pop("l1", None)
        params["relative_l1"] = summary["relative_l1"]
    seed = int(summary.get("seed") or 0)
    K = int(cs.dictionary.components_.shape[0])
    # too few samples for two halves of K concepts each (a rare word): the seed stability alone
    return stability(type(cs.dictionary), Z_train, K, seed=seed, fitted=cs.dictionary,
                     halves=len(Z_train) // 2 >= K, **params)


def _precisions(words, tops, test_attributes, suffix: str) -> dict:
    from mmconcepts.evaluation.grounding.ground_truth import grounding_precision

    return {f"grounding_precision_top{k}_{suffix}": grounding_precision(words, test_attributes, top, strict=True)
            for k, top in tops.items()}


def _word_metrics(cs, model, tops, test_attributes, fixed_words, train_meta) -> dict:
    """The metrics of the folder's words and of its words grounded again with ``n`` words, ``n`` in
    ``fixed_words``; precisions only with ``test_attributes`` (ShapesWorld)."""
    from mmconcepts.concepts.concept_set import model_for
    from mmconcepts.evaluation.grounding import overlap as W

    words = cs.word_sets()
    out = {"words_per_concept": W.words_per_concept(words), "empty_concepts": W.empty_concepts(words),
           "overlap_strict": W.overlap_strict(words)}
    if test_attributes:
        out.update(_precisions(words, tops, test_attributes, "strict"))
    if fixed_words:
        # words read by the captions are read through the whole model, once for every cut
        captioned = (cs.grounding or {}).get("decode") == "caption"
        adapter = model_for(cs, model, head=not captioned)
        if captioned:
            from mmconcepts.concepts.ground import caption_token_scores

            scores = caption_token_scores(cs, adapter, train_meta)
        else:
            scores = None
        for n in fixed_words:
            fixed = reground_words(cs, adapter, n, meta=train_meta, scores=scores)
            out[f"words_per_concept_words{n}"] = W.words_per_concept(fixed)
            out[f"overlap_words{n}"] = W.overlap_strict(fixed)
            if test_attributes:
                out.update(_precisions(fixed, tops, test_attributes, f"words{n}"))
    return out


def extended_metrics(concepts, Z_test, test_meta, *, model=None, Z_train=None,
                     settings: ExtendedSettings | None = None, **fields) -> ExtendedRow:
    """The extended metrics of a concepts folder on a test set (see the module docstring).

    Parameters
    ----------
    concepts : ConceptSet or path
        A grounded concepts folder (``mmconcepts learn``), or it read back.
    Z_test : (N_test, D) torch.Tensor
        Test features of the folder's layer and token.
    test_meta : list of dict
        Their metadata rows (ShapesWorld ``attributes`` for the ground-truth metrics).
    model : ModelAdapter, ModelOptions, str or None
        For the fixed-word grounding: a loaded adapter, or what
        :func:`~mmconcepts.concepts.concept_set.model_for` loads (the head of the model the run record names).
    Z_train : (N, D) torch.Tensor, optional
        The training features (else read from the folder's store).
    settings : ExtendedSettings, optional
        What to compute, or its fields as keywords (``seed=``, ``stability=``, ``probing=``, ``fixed_words=``).

    Returns
    -------
    ExtendedRow
        The keys of :data:`EXTENDED_METRICS` that apply, rounded to 4 decimals.
    """
    import torch

    from mmconcepts.concepts.concept_set import ConceptSet, load_concepts
    from mmconcepts.params import settings_from

    settings = settings_from(ExtendedSettings, settings, fields, "extended")
    cs = concepts if isinstance(concepts, ConceptSet) else load_concepts(concepts, require_grounding=True)
    test_codes = cs.encode(Z_test)
    shapes = bool(test_meta) and all("attributes" in m for m in test_meta)
    test_attributes = [m["attributes"] for m in test_meta] if shapes else []
    tops = {k: test_codes.float().topk(min(k, test_codes.shape[1]), dim=1).indices.tolist() for k in (1, 3)}
    train_meta = cs.train_meta()
    out = _word_metrics(cs, model, tops, test_attributes, settings.fixed_words, train_meta)
    train_shapes = bool(train_meta) and all("attributes" in m for m in train_meta)
    probing = settings.probing and shapes and train_shapes
    if shapes and train_shapes:
        from mmconcepts.evaluation.extended.coverage import coverage_by_kind

        out.update(coverage_by_kind(cs.activations, [m["attributes"] for m in train_meta], cs.token))
    if (settings.stability or probing) and Z_train is None:
        from mmconcepts.extract.features import load_features

        Z_train = load_features(cs.features, cs.summary["layer"], cs.token)[0]
    if probing:
        from mmconcepts.evaluation.extended.probing import sparse_probing

        out.update(sparse_probing(cs.encode(Z_train), train_meta, test_codes, test_meta, cs.token,
                                  Z_train=Z_train, Z_test=Z_test, ks=_KS, seed=settings.seed))
    if settings.stability:
        out.update(_stability(cs, torch.as_tensor(Z_train)))
    return ExtendedRow(out)
