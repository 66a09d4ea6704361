"""Workflows above the stages: they chain the stages' public API and own no method of their own.

:mod:`~.demo` (``mmconcepts demo``: ShapesWorld, extraction, dictionaries, evaluation, report),
:mod:`~.sweep` (``mmconcepts sweep``: learn, ground and evaluate at every stored layer) and
:mod:`~.benchmark` (``mmconcepts benchmark``: every token x seed x method, with 95% intervals).
"""
