"""Evaluation: how good are the concepts, next to baselines? One sub-package per question.

:mod:`~.evaluate` runs them on a concepts folder and a test store (``mmconcepts evaluate``): it reads its
inputs once into an :class:`~.evaluate.EvaluationRun` (configured by :class:`~.settings.EvaluationSettings`),
learns the comparisons and scores the baselines (:mod:`~.comparisons`), and writes the evaluation folder
(:mod:`~.folder`) whose ``metrics.json`` is :class:`~.results.EvaluationResult`. Each evaluation returns its
part of a row as a typed row (:mod:`~.rows`).

- :mod:`~.grounding`: are the concepts' words right and distinct? (overlap, precision against the ground
  truth, coverage, purity, CLIPScore, BERTScore)
- :mod:`~.causal`: does the model use them? (steering and ablation against ShapesWorld's truth)
- :mod:`~.attribution`: do their maps point at the object? (pointing game, energy inside)
- :mod:`~.extended`: are they stable, probeable, and do they cover each attribute kind?
- :mod:`~.captioning`: how well does the model caption ShapesWorld at all?

ShapesWorld's ground truth itself (which words are true of an image, the token object) is
:mod:`mmconcepts.data.truth`.
"""
