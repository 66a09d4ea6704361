"""Are the concepts' words right and distinct? The grounding metrics of a set of concepts, one row of
``metrics.json`` per method or baseline.

:mod:`~.scoring` scores one row (:func:`~.scoring.score`, a :class:`~.scoring.GroundingRow`) from the concepts'
words and activations, with the optional model scorers (:class:`~.scoring.Scorers`) as its configuration;
:mod:`~.overlap` holds the word-set metrics that need no ground truth (overlap, strict overlap, words per
concept, empty concepts); :mod:`~.ground_truth` the ShapesWorld ones (grounding precision, plain or strict,
coverage, purity), read against :mod:`mmconcepts.data.truth`; :mod:`~.model_scores` the CLIPScore and
BERTScore scorers.
"""
