"""The learning settings: which layer and words, which method with how many concepts and how sparse; validated
once, generated into ``mmconcepts learn``'s flags, and what :func:`~mmconcepts.decompose.learn` runs.

Read without importing torch (``--help`` stays fast); the method's name is checked when ``learn`` builds it.

Examples
--------
>>> s = LearnSettings(n_concepts=8, max_iter=50)
>>> s.method, s.n_concepts, s.parameters
('semi-nmf', 8, {'max_iter': 50})
>>> s.relative_l1_applied
0.05
>>> LearnSettings(relative_l1=1.5)
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: relative_l1 (--relative-l1) must be a number in [0, 1) or None, got 1.5
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmconcepts.errors import MMConceptsError
from mmconcepts.params import Boolean, Interval, Options, Text, param, validate

#: Default sparsity of the methods that have one, as a share of the features' mean norm (see ``relative_l1``).
#: Semi-NMF with a small L1 term is the paper's objective (its code: DictionaryLearning, positive codes);
#: on ShapesWorld it makes each sample use a few concepts, and those concepts read as true words (README).
DEFAULT_RELATIVE_L1 = {"semi-nmf": 0.05}

#: How an image's patch activations pool into the image's, for image-token stores (the first is the default;
#: :mod:`mmconcepts.concepts.pooling`).
POOLS = ("max", "mean")

__all__ = ["DEFAULT_RELATIVE_L1", "LearnSettings", "POOLS"]


@dataclass(frozen=True)
class LearnSettings:
    """What ``learn`` fits on a feature store.

    Parameters
    ----------
    layer : str, int or None
        Stored layer name (``"31"``, ``"norm"``) or a negative index; ``None`` if the store holds one layer.
    token : str or None
        The word whose rows to learn from, in a store of several words (required there); ``None``: the
        store's only word.
    method : str
        A registry name (``"semi-nmf"``, ``"nmf"``, ``"pca"``, ...; :mod:`~mmconcepts.decompose.registry`) or
        a class of your own as ``"package.module:ClassName"``.
    n_concepts : int
        Number of concepts ``K``.
    l1 : float or None
        L1 weight for methods that have one, in the features' units (``None``: see ``relative_l1``).
    relative_l1 : float or None
        L1 weight as a share of the features' mean norm, ``l1 = relative_l1 * mean ||z||``, so that one setting
        means the same sparsity at every layer and model; for every method with an ``l1`` parameter
        (semi-nmf, nmf, relu-sae, reference-dl; the others refuse it). ``None``: :data:`DEFAULT_RELATIVE_L1` for
        semi-nmf when ``l1`` is not given either, the method's default otherwise.
    seed : int
        The same seed gives the same concepts (bit for bit on the CPU).
    max_iter, tol : int, float or None
        Iterations and stopping tolerance (``None``: the method's).
    stream : bool or None
        Read the store shard by shard (methods with ``fit_shards``); ``None``: when the features exceed 4 GiB.
    device : str
        Compute device (the command line's ``--device``).
    pool : str
        Image-token stores (``extract --positions image``): how an image's explanation pools its patches'
        activations, ``"max"`` (a concept's strongest patch) or ``"mean"`` (its share of the image);
        recorded in ``summary.json`` (:mod:`~mmconcepts.concepts.pooling`). No effect on other stores.
    method_parameters : dict
        Further parameters of the method (``{"k": 8}`` for topk-sae, ...).
    """

    layer: str | int | None = param(None, help="stored layer (e.g. 31, -1, norm)", optional=True,
                                    shown="the store's only layer")
    token: str | None = param(None, constraint=Text(), optional=True,
                              help="the word whose rows to learn from (required when the store holds several words)")
    method: str = param("semi-nmf", constraint=Text(), metavar="METHOD", help="decomposition")
    n_concepts: int = param(20, constraint=Interval(int, 1), short="-k", metavar="K", help="number of concepts")
    l1: float | None = param(None, constraint=Interval(float, 0), optional=True, shown="nmf: 0; reference-dl: 1",
                             help="L1 weight on the activations, in the features' units")
    relative_l1: float | None = param(None, constraint=Interval(float, 0, 1, closed="left"), optional=True,
                                      shown="semi-nmf: 0.05", help="L1 weight as a share of the features' mean "
                                                                   "norm (0 for pure Semi-NMF)")
    seed: int = param(0, constraint=Interval(int, 0), help="random seed")
    max_iter: int | None = param(None, constraint=Interval(int, 1), optional=True, shown="the method's",
                                 help="maximum iterations")
    tol: float | None = param(None, constraint=Interval(float, 0), optional=True, shown="the method's",
                              help="stopping tolerance")
    stream: bool | None = param(None, constraint=Boolean(), optional=True, shown="when features exceed 4 GiB",
                                help="read the store shard by shard (semi-nmf, nmf, the SAEs)")
    device: str = param("cpu", flag=None, help="compute device")
    pool: str = param("max", constraint=Options(POOLS, noun="pooling"),
                      help="image-token stores: an image's concept activation is its patches' max or mean")
    method_parameters: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self)
        if self.l1 is not None and self.relative_l1 is not None:
            raise MMConceptsError("give --l1 or --relative-l1, not both")
        if not isinstance(self.method_parameters, dict):
            raise MMConceptsError(f"method_parameters must be a dict of the method's parameters, got "
                                  f"{self.method_parameters!r}")

    @property
    def parameters(self) -> dict:
        """The method's parameters these settings give: ``method_parameters`` with ``max_iter`` and ``tol``
        where set (``l1``, ``device`` and ``seed`` are added by ``learn``, for the methods that take them)."""
        given = {name: getattr(self, name) for name in ("max_iter", "tol") if getattr(self, name) is not None}
        return {**self.method_parameters, **given}

    @property
    def relative_l1_applied(self) -> float | None:
        """``relative_l1``, or the method's default share (:data:`DEFAULT_RELATIVE_L1`) when neither it nor
        ``l1`` is given."""
        if self.relative_l1 is None and self.l1 is None:
            return DEFAULT_RELATIVE_L1.get(self.method)
        return self.relative_l1
