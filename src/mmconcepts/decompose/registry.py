"""The concept-dictionary methods by name: one explicit, ordered table, read without importing torch.

:data:`BUILTIN` names every shipped method (the name ``mmconcepts learn --method`` takes) with the class
that implements it, written as ``"package.module:ClassName"``, and one line on what it learns; its order is
the order of the documentation and of ``--help``. :func:`method_class` imports a method's class when it is
first needed. A class of one's own joins under its *method spec* ``"package.module:ClassName"``
(:func:`~mmconcepts.decompose.custom.load_method` imports it and registers it here); no other class joins by
being defined. :data:`METHODS` maps every name, built-in and registered, to its class.

Examples
--------
>>> METHOD_NAMES[:3]
('semi-nmf', 'nmf', 'pca')
>>> BUILTIN["pca"].target
'mmconcepts.decompose.pca:PCA'
>>> method_class("kmeans").__name__
'KMeans'
>>> is_method_spec("mypkg.dictionaries:MyDictionary"), is_method_spec("semi-nmf")
(True, False)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from mmconcepts.errors import MMConceptsError

__all__ = ["BUILTIN", "METHODS", "METHOD_NAMES", "Method", "MethodRegistry", "is_method_spec", "method_class"]

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class Method:
    """One built-in method: where its class lives and what it learns.

    Parameters
    ----------
    target : str
        The class, as ``"package.module:ClassName"``.
    summary : str
        One line on the concepts and activations it learns.
    """

    target: str
    summary: str

    @property
    def class_name(self) -> str:
        """The class's name (the part after the colon)."""
        return self.target.partition(":")[2]

    def load(self) -> type:
        """The class, its module imported (once: Python keeps it).

        Returns
        -------
        type
        """
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


#: Method name -> :class:`Method`, in the documented order.
BUILTIN: dict[str, Method] = {
    "semi-nmf": Method("mmconcepts.decompose.semi_nmf:SemiNMF",
                       "activations >= 0 (exact zeros), free concepts, optional L1 (the paper)"),
    "nmf": Method("mmconcepts.decompose.nmf:NMF", "non-negative features, activations and concepts"),
    "pca": Method("mmconcepts.decompose.pca:PCA", "principal directions, signed activations (each read on both "
                                                  "sides)"),
    "kmeans": Method("mmconcepts.decompose.kmeans:KMeans", "centroids, activation 1 / (1 + distance)"),
    "simple": Method("mmconcepts.decompose.simple:Simple",
                     "the K samples of largest norm, activation 1 / (1 + distance)"),
    "topk-sae": Method("mmconcepts.decompose.topk_sae:TopKSAE", "top-k sparse autoencoder (Adam), for larger K"),
    "batchtopk-sae": Method("mmconcepts.decompose.batchtopk_sae:BatchTopKSAE",
                            "BatchTopK sparse autoencoder: k active per sample on average, a threshold at inference"),
    "jumprelu-sae": Method("mmconcepts.decompose.jumprelu_sae:JumpReLUSAE",
                           "JumpReLU sparse autoencoder: a learnt threshold per concept, an L0 penalty"),
    "matryoshka-sae": Method("mmconcepts.decompose.matryoshka_sae:MatryoshkaSAE",
                             "Matryoshka BatchTopK sparse autoencoder: nested groups, each prefix a reconstruction"),
    "relu-sae": Method("mmconcepts.decompose.relu_sae:ReLUSAE", "ReLU sparse autoencoder with an L1 penalty"),
    "reference-dl": Method("mmconcepts.decompose.reference_dl:ReferenceDL",
                           "scikit-learn DictionaryLearning, as the reference code"),
}
#: The built-in method names, in the documented order.
METHOD_NAMES: tuple[str, ...] = tuple(BUILTIN)


def is_method_spec(name: Any) -> bool:
    """Whether ``name`` is written as a method spec, ``"package.module:ClassName"``.

    Parameters
    ----------
    name : object

    Returns
    -------
    bool
    """
    return isinstance(name, str) and bool(_SPEC.match(name))


def _where(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class MethodRegistry(MutableMapping):
    """Method name -> dictionary class: the :data:`BUILTIN` table (each class imported when first read), then
    the classes registered under their method spec, in the order they joined.

    A built-in name cannot be removed or given to another class; a registered name can be dropped
    (``del METHODS[spec]``) and registered again.
    """

    def __init__(self, builtin: dict[str, Method]):
        self._builtin = builtin
        self._registered: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        if name in self._registered:
            return self._registered[name]
        method = self._builtin.get(name) if isinstance(name, str) else None
        if method is None:
            raise KeyError(name)
        return method.load()

    def __contains__(self, name: object) -> bool:  # without importing a class
        return isinstance(name, str) and (name in self._builtin or name in self._registered)

    def __iter__(self) -> Iterator[str]:
        yield from self._builtin
        yield from list(self._registered)

    def __len__(self) -> int:
        return len(self._builtin) + len(self._registered)

    def __setitem__(self, name: str, cls: type) -> None:
        self.check_free(name, cls)
        if name not in self._builtin:
            self._registered[name] = cls  # the same class defined again (a module reloaded) replaces itself

    def __delitem__(self, name: str) -> None:
        if name in self._builtin:
            raise MMConceptsError(f"{name!r} is a built-in method and stays registered; register your class under "
                                  "its own method spec instead")
        del self._registered[name]

    def check_free(self, name: str, cls: type) -> None:
        """Refuse ``name`` for ``cls`` when another class holds it (the same class defined again may).

        Parameters
        ----------
        name : str
        cls : type

        Raises
        ------
        MMConceptsError
        """
        holder = self._builtin[name].target if name in self._builtin else \
            _where(self._registered[name]) if name in self._registered else None
        if holder is not None and holder != _where(cls):
            raise MMConceptsError(f"the method name {name!r} is taken by {holder.replace(':', '.')}: give "
                                  f"{cls.__qualname__} another method name")

    def __repr__(self) -> str:
        return f"MethodRegistry({list(self)})"


#: Every method name -> its class: the built-in ones, then those registered by spec.
METHODS = MethodRegistry(BUILTIN)


def method_class(name: str) -> type:
    """The dictionary class of a method name (``"semi-nmf"``) or of a method spec (imported and registered by
    :func:`~mmconcepts.decompose.custom.load_method`).

    Parameters
    ----------
    name : str

    Returns
    -------
    type
        A :class:`~mmconcepts.decompose.ConceptDictionary` subclass.

    Raises
    ------
    MMConceptsError
        For an unknown name, or a spec whose class cannot be loaded.
    """
    if name in METHODS:
        return METHODS[name]
    if is_method_spec(name):
        from mmconcepts.decompose.custom import load_method

        return load_method(name)
    raise MMConceptsError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}, or name your own class "
                          "as package.module:ClassName")
