"""Concept dictionaries: ``Z ~ V U`` with concepts ``U`` (``K x D``) and activations ``V`` (``N x K``).

One module per method, each a scikit-learn estimator (``BaseEstimator`` + ``TransformerMixin``: ``fit``,
``transform``, ``inverse_transform``, ``fit_transform``, ``score``, ``get_params`` / ``set_params``,
``clone``, pipelines and ``GridSearchCV``; ``partial_fit`` for the methods that stream) over torch tensors
(torch in, torch out; NumPy in, NumPy out), with ``components_``, ``n_iter_``, ``reconstruction_err_`` and
``save`` / :func:`load_dictionary`. The methods are named in one table, :mod:`~mmconcepts.decompose.registry`
(:data:`METHODS`):

================== ============================================================================
``semi-nmf``       :class:`SemiNMF`: activations >= 0 (exact zeros), free concepts, optional L1 (the paper)
``nmf``            :class:`NMF`: non-negative features, activations and concepts
``pca``            :class:`PCA`: principal directions, signed activations (``signed_activations``)
``kmeans``         :class:`KMeans`: centroids, activation ``1 / (1 + distance)``
``simple``         :class:`Simple`: the K samples of largest norm, activation ``1 / (1 + distance)``
``topk-sae``       :class:`TopKSAE`: top-k sparse autoencoder (Adam), for larger K
``batchtopk-sae``  :class:`BatchTopKSAE`: BatchTopK SAE, k active per sample on average, a threshold at inference
``jumprelu-sae``   :class:`JumpReLUSAE`: JumpReLU SAE, a learnt threshold per concept, an L0 penalty
``matryoshka-sae`` :class:`MatryoshkaSAE`: Matryoshka BatchTopK SAE, nested groups, each prefix a reconstruction
``relu-sae``       :class:`ReLUSAE`: ReLU SAE with an L1 penalty
``reference-dl``   :class:`ReferenceDL`: scikit-learn DictionaryLearning, as the reference code
================== ============================================================================

The sparse autoencoders share :class:`~mmconcepts.decompose.sae.SparseAutoencoder` (training, streaming, the
saved training state) and :func:`~mmconcepts.decompose.sae_weights.from_weights` (one trained elsewhere).

A class of your own joins as ``"package.module:ClassName"`` (:mod:`~mmconcepts.decompose.custom`,
:func:`load_method`). :func:`learn` runs a method on a feature store and writes the dictionary, the training
activations and a summary; :func:`mmconcepts.decompose.nnls.nnls` encodes new samples on a fixed dictionary
(batched non-negative lasso with exact zeros).

Importing this package does not import torch: the registry and :func:`learn` are read at once, every other
name (the classes, :func:`load_dictionary`, ...) when first used, so that the command line's ``--help`` stays
fast.
"""

from __future__ import annotations

import importlib

from mmconcepts.decompose.learn import learn
from mmconcepts.decompose.registry import BUILTIN, METHOD_NAMES, METHODS, method_class

#: Names read from their module when first used (torch is imported then), besides the built-in classes.
_LAZY = {"ConceptDictionary": "base", "concept_directions": "base", "one_sided": "base",
         "SparseAutoencoder": "sae", "from_weights": "sae_weights",
         "load_dictionary": "persistence", "load_method": "custom"}
_CLASSES = {method.class_name: method for method in BUILTIN.values()}

__all__ = ["METHODS", "METHOD_NAMES", "ConceptDictionary", "concept_directions", "load_dictionary", "SemiNMF", "NMF",
           "PCA", "KMeans", "Simple", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "MatryoshkaSAE", "ReLUSAE",
           "ReferenceDL", "SparseAutoencoder", "from_weights", "learn", "load_method", "method_class", "one_sided"]


def __getattr__(name: str):
    if name in _CLASSES:
        return _CLASSES[name].load()
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_CLASSES})
