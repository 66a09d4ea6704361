"""How faithful is the dictionary inside the model? The reconstruction spliced in at the dictionary's layer.

:mod:`~.splice` replaces the hidden state from which the token of interest is predicted by the dictionary's
reconstruction (or by zero, or by the layer's mean state over every position, :mod:`~.mean_state`: the
ablations that set the scale) through the one hook owner, and runs the test images with it
(:func:`~.splice.fidelity_evaluation`, configured by :class:`~.settings.FidelitySettings`); :mod:`~.scores`
holds the metrics as pure functions (explained variance, L0, dead concepts, KL divergence, cross-entropy, and
the share of each recovered) and the typed result
(:class:`~.scores.FidelityRow` per method, :class:`~.scores.FidelityResult`: ``metrics.json``'s ``fidelity``).
"""
