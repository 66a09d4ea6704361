"""Scoring: pure functions from concepts' words and activations on a test set to the metrics of one row.

Nothing here fits, grounds or writes anything: :func:`score` takes the words of K concepts, the test
samples' concept activations (and, for coverage and purity, the training samples'), and returns the row of
metrics.json (a :class:`GroundingRow`); :func:`gt_captions_scores` scores the reference captions in place of
concept words. What scores a row is its configuration, :class:`Scorers` (the optional CLIP and BERTScore
models). The orchestration (which dictionaries, which baselines) is
:func:`mmconcepts.evaluation.evaluate.evaluate`.

Metrics of a row
----------------
``overlap`` (the paper's disentanglement, lower is better); ``clipscore_top1/3`` (CLIPScore of the test
image against "A photo is described by the words ..." of its top-1 / top-3 concepts) and
``bertscore_top1/3`` (BERTScore F1 of the reference caption against those words), when a scorer is given;
on ShapesWorld ``grounding_precision_top1/3`` (the share of those words true of the image), ``coverage``
and ``purity`` (of the concepts' most activating training images). A metric that does not apply is absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmconcepts.evaluation.grounding.ground_truth import coverage, grounding_precision, purity
from mmconcepts.evaluation.grounding.overlap import overlap
from mmconcepts.evaluation.rows import Row, mean

__all__ = ["GroundingRow", "Scorers", "TestSet", "gt_captions_scores", "score"]


@dataclass
class TestSet:
    """The test samples: metadata rows (``image``, ``references``, ShapesWorld ``attributes``)."""

    meta: list[dict]
    _images: list | None = field(default=None, repr=False)

    @property
    def shapes(self) -> bool:
        """ShapesWorld ground truth on every sample."""
        return bool(self.meta) and all("attributes" in m for m in self.meta)

    def images(self) -> list:
        from mmconcepts.data.readers import load_image

        if self._images is None:
            self._images = [load_image(m["image"]) for m in self.meta]
        return self._images


@dataclass
class Scorers:
    """The optional model-based scorers: a :class:`~mmconcepts.evaluation.grounding.model_scores.CLIPScorer` and a
    :class:`~mmconcepts.evaluation.grounding.model_scores.BERTScorer` (either may be ``None``: no such score)."""

    clip: object = None
    bert: object = None

    @classmethod
    def load(cls, clip_model: str | None = None, bert_model: str | None = None, bert_layers: int | None = None,
             device: str = "cpu") -> "Scorers":
        """The scorers of the models named (hub ids or folders; ``None``: no such score), loaded on ``device``.

        Examples
        --------
        >>> Scorers.load()
        Scorers(clip=None, bert=None)
        """
        scorers = cls()
        if clip_model is not None:
            from mmconcepts.evaluation.grounding.model_scores import CLIPScorer

            scorers.clip = CLIPScorer(clip_model, device=device)
        if bert_model is not None:
            from mmconcepts.evaluation.grounding.model_scores import BERTScorer

            scorers.bert = BERTScorer(bert_model, num_layers=bert_layers, device=device)
        return scorers


@dataclass(frozen=True, eq=False)
class GroundingRow(Row):
    """The grounding metrics of one set of concepts (or of a baseline), for a row of ``metrics.json``.

    ``None``: the metric does not apply (no scorer, no ShapesWorld ground truth, no training activations).
    See the module docstring for what each measures.

    Examples
    --------
    >>> GroundingRow(overlap=0.25, grounding_precision_top1=0.5).to_json()
    {'overlap': 0.25, 'grounding_precision_top1': 0.5}
    """

    overlap: float | None = None
    clipscore_top1: float | None = None
    bertscore_top1: float | None = None
    grounding_precision_top1: float | None = None
    clipscore_top3: float | None = None
    bertscore_top3: float | None = None
    grounding_precision_top3: float | None = None
    coverage: float | None = None
    purity: float | None = None


def _top(activations, k: int) -> list[list[int]]:
    k = min(k, activations.shape[1])
    return activations.float().topk(k, dim=1).indices.tolist()


def _texts_score(test: TestSet, scorers: Scorers, texts_per_sample: list[list[str]]) -> dict:
    """Mean CLIPScore / BERTScore of each test sample against its texts: ``{"clip": [...], "bert": [...]}``
    over the samples that have at least one text."""
    from mmconcepts.evaluation.grounding.model_scores import words_prompt

    flat = [(i, t) for i, texts in enumerate(texts_per_sample) for t in texts]
    if not flat:
        return {}
    raw = {}
    if scorers.clip is not None:
        images = test.images()
        raw["clip"] = scorers.clip.score([images[i] for i, _ in flat],
                                         [words_prompt(t.split(", ")) for _, t in flat]).tolist()
    if scorers.bert is not None:
        refs = [(test.meta[i].get("references") or [""])[0] for i, _ in flat]
        raw["bert"] = scorers.bert.f1([t for _, t in flat], refs).tolist()
    result = {}
    for name, values in raw.items():
        sums = [0.0] * len(texts_per_sample)
        for (i, _), v in zip(flat, values):
            sums[i] += v
        result[name] = [sums[i] / len(t) for i, t in enumerate(texts_per_sample) if t]
    return result


def _row(metrics: dict) -> GroundingRow:
    """The row of ``metrics``, each finite value rounded to 4 decimals."""
    return GroundingRow(**{k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v
                           for k, v in metrics.items()})


def score(words: list[list[str]], test_activations, test: TestSet, scorers: Scorers = Scorers(), *,
          train_activations=None, train_meta: list[dict] | None = None, token: str | None = None) -> GroundingRow:
    """The metrics of one set of concepts.

    Parameters
    ----------
    words : the grounded words of each of the K concepts.
    test_activations : ``N_test x K`` concept activations of the test samples.
    test : the test samples.
    scorers : CLIP and BERTScore scorers (optional).
    train_activations, train_meta : the training samples' activations and metadata (coverage and purity on
        ShapesWorld); without them those two are absent.
    token : the token of interest (its value is shared by every sample, so it is not a concept's to own).

    Returns
    -------
    GroundingRow : the metrics, rounded to 4 decimals; those that do not apply are ``None`` (absent).
    """
    out = {"overlap": overlap([set(w) for w in words])}
    for top in (1, 3):
        tops = _top(test_activations, top)
        texts = [[", ".join(words[k]) for k in row if words[k]] for row in tops]
        for name, per_sample in _texts_score(test, scorers, texts).items():
            out[f"{name}score_top{top}"] = mean(per_sample, empty=math.nan)
        if test.shapes:
            out[f"grounding_precision_top{top}"] = grounding_precision(
                words, [m["attributes"] for m in test.meta], tops)
    if test.shapes and train_activations is not None and train_meta and \
            all("attributes" in m for m in train_meta):
        attributes = [m["attributes"] for m in train_meta]
        exclude = [token] if token else []
        out["coverage"] = coverage(train_activations, attributes, exclude=exclude)["coverage"]
        out["purity"] = purity(train_activations, attributes, exclude=exclude)
    return _row(out)


def gt_captions_scores(test: TestSet, scorers: Scorers = Scorers()) -> GroundingRow:
    """The reference captions in place of the words (an upper reference): CLIPScore of the first caption,
    BERTScore of the second against the first, grounding precision of the first caption's words."""
    from mmconcepts.concepts.vocabulary import is_valid_word

    out = {}
    refs = [m.get("references") or [m["caption"]] for m in test.meta]
    if scorers.clip is not None:
        clip = scorers.clip.score(test.images(), [r[0] for r in refs])
        out["clipscore_top1"] = mean(clip.tolist(), empty=math.nan)
    if scorers.bert is not None:
        pairs = [(r[1], r[0]) for r in refs if len(r) > 1]
        if pairs:
            f1 = scorers.bert.f1([a for a, _ in pairs], [b for _, b in pairs])
            out["bertscore_top1"] = mean(f1.tolist(), empty=math.nan)
    if test.shapes:
        words = [[w for w in r[0].lower().replace(",", " ").split() if is_valid_word(w)] for r in refs]
        out["grounding_precision_top1"] = grounding_precision(
            words, [m["attributes"] for m in test.meta], [[i] for i in range(len(refs))])
    return _row(out)
