"""Interventions: does the model *use* a concept? Add it to, or remove it from, the hidden states while the
model generates, and read the captions.

:mod:`~.directions` holds the directions a concept is steered with (the concept's own, a centred one, a
random control, DiffMean) and the default strength; :mod:`~.steering` the intervention itself
(:class:`~.steering.Steering`, a context manager over the model's hooks); :mod:`~.steer_captions` captions
images without and with it (``mmconcepts steer``).
"""
