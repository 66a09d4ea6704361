"""Concept dictionaries: ``Z ~ V U`` with concepts ``U`` (``K x D``) and activations ``V`` (``N x K``).

One module per method, each a scikit-learn estimator (``BaseEstimator`` + ``TransformerMixin``: ``fit``,
``transform``, ``inverse_transform``, ``fit_transform``, ``score``, ``get_params`` / ``set_params``,
``clone``, pipelines and ``GridSearchCV``; ``partial_fit`` for the methods that stream) over torch tensors
(torch in, torch out; NumPy in, NumPy out), with ``components_``, ``n_iter_``, ``reconstruction_err_`` and
``save`` / :func:`load_dictionary`:

=============== ============================================================================
``semi-nmf``    :class:`SemiNMF`: activations >= 0 (exact zeros), free concepts, optional L1 (the paper)
``nmf``         :class:`NMF`: non-negative features, activations and concepts
``pca``         :class:`PCA`: principal directions, signed activations (``signed_activations``)
``kmeans``      :class:`KMeans`: centroids, activation ``1 / (1 + distance)``
``simple``      :class:`Simple`: the K samples of largest norm, activation ``1 / (1 + distance)``
``topk-sae``    :class:`TopKSAE`: top-k sparse autoencoder (Adam), for larger K
``reference-dl`` :class:`ReferenceDL`: scikit-learn DictionaryLearning, as the reference code
=============== ============================================================================

A class of your own joins as ``"package.module:ClassName"`` (:mod:`~mmconcepts.decompose.custom`,
:func:`load_method`). :func:`learn` runs a method on a feature store and writes the dictionary, the training activations and a
summary; :func:`mmconcepts.decompose.nnls.nnls` encodes new samples on a fixed dictionary (batched
non-negative lasso with exact zeros).
"""

from mmconcepts.decompose.base import METHODS, ConceptDictionary, load_dictionary, two_sided
from mmconcepts.decompose.semi_nmf import SemiNMF
from mmconcepts.decompose.nmf import NMF
from mmconcepts.decompose.pca import PCA
from mmconcepts.decompose.kmeans import KMeans
from mmconcepts.decompose.simple import Simple
from mmconcepts.decompose.topk_sae import TopKSAE
from mmconcepts.decompose.reference_dl import ReferenceDL
from mmconcepts.decompose.learn import learn
from mmconcepts.decompose.custom import load_method

_ORDER = ("semi-nmf", "nmf", "pca", "kmeans", "simple", "topk-sae", "reference-dl")
METHODS.update({name: METHODS.pop(name) for name in _ORDER})  # registry in the documented order

__all__ = ["METHODS", "ConceptDictionary", "load_dictionary", "SemiNMF", "NMF", "PCA", "KMeans", "Simple",
           "TopKSAE", "ReferenceDL", "learn", "load_method", "two_sided"]
