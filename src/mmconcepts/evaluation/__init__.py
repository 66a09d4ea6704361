"""Evaluation: how good are the concepts, next to baselines? One sub-package per question.

:mod:`~.evaluate` runs them on a concepts folder and a test store (``mmconcepts evaluate``) and writes the
evaluation folder whose ``metrics.json`` is :class:`~.results.EvaluationResult`.

- :mod:`~.grounding`: are the concepts' words right and distinct? (overlap, precision against the ground
  truth, coverage, purity, CLIPScore, BERTScore)
- :mod:`~.causal`: does the model use them? (steering and ablation against ShapesWorld's truth)
- :mod:`~.attribution`: do their maps point at the object? (pointing game, energy inside)
- :mod:`~.extended`: are they stable, probeable, and do they cover each attribute kind?
- :mod:`~.captioning`: how well does the model caption ShapesWorld at all?
"""
