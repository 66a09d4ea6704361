"""Concepts named by a model from their top images, and the names scored: ``evaluate --autointerp``.

:mod:`.settings` holds what the naming reads (:class:`~.settings.AutointerpSettings`), :mod:`.naming` the
namer (a captioning model) and the contrastive names, :mod:`.scores` the scores of a name (detection, and on
ShapesWorld its truth) and the typed results; :func:`.naming.autointerp_evaluation` runs them on one concepts
folder.
"""
