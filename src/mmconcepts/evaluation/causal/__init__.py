"""Does the model use the concepts? The causal evaluation: steer the captioner with each concept's direction,
or ablate the concept, and read the captions back with ShapesWorld's grammar.

:mod:`~.interventions` runs the interventions (:func:`~.interventions.causal_evaluation`, configured by
:class:`~.settings.CausalSettings`, whose calibrated defaults it explains) and returns, per direction, a
:class:`~.scores.CausalScores`; :mod:`~.scores` holds the metrics as pure functions of the captions before and
after (steering and ablation success, specificity, fluency), the ``metrics.json`` row
(:class:`~.scores.CausalRow`) and ``causal.json`` (:class:`~.scores.CausalResult`).
"""
