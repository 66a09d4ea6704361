"""Are the concepts stable, probeable, and do they cover each kind of attribute? The extended metrics of one
concepts folder (``evaluate --extended``, the benchmark).

:mod:`~.collect` gathers them into one row (:func:`~.collect.extended_metrics`, configured by
:class:`~.collect.ExtendedSettings`, an :class:`~.collect.ExtendedRow`): the word metrics with strict and
fixed-word variants, and those of :mod:`~.coverage` (coverage split by the token object's attributes and the
other objects'), :mod:`~.probing` (k-sparse probing of the token object's attributes, SAEBench's) and
:mod:`~.stability` (matched cosine of refits across seeds and halves of the data).
"""
