"""Concept maps: where in the image a concept's activation at the token of interest comes from.

:mod:`~.settings` holds :class:`MapSettings` and :class:`ConceptMap`; :mod:`~.methods` the methods
(attribution, occlusion, projection) and :func:`concept_maps`; :mod:`~.inputs` reads images up to the token
of interest; :mod:`~.readout` makes a concept's activation a differentiable function of the state. Image
tokens are placed on the image by :mod:`mmconcepts.models.patches`.
"""

from mmconcepts.attribution.inputs import TokenReading, batch_inputs, read_images, read_rows
from mmconcepts.attribution.methods import concept_maps, maps_of_readings
from mmconcepts.attribution.readout import activation_of, local_readout
from mmconcepts.attribution.settings import BASELINES, METHODS, ConceptMap, MapSettings

__all__ = ["BASELINES", "METHODS", "ConceptMap", "MapSettings", "TokenReading", "activation_of", "batch_inputs",
           "concept_maps", "local_readout", "maps_of_readings", "read_images", "read_rows"]
