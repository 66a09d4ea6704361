"""mmconcepts: explain large multimodal models through multimodal concepts.

The data flows one way, one subpackage a stage::

    data -> models (adapter) -> extract (feature store) -> decompose (dictionary)
         -> grounding (words, images, explanations) -> evaluation -> report
"""

__version__ = "0.1.0"
