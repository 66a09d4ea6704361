"""The directions a concept is steered with, and its strength: the concept's own unit direction, a random
direction of the same norm (the control), the mean difference between the states of the concept's most
activating samples and the rest (the strong baseline of AxBench), and the default strength (the concept's
typical contribution times :data:`STRENGTH_FACTOR`). See :mod:`mmconcepts.interventions.steering`.

Examples
--------
The functions read a concepts folder (:class:`~mmconcepts.concepts.concept_set.ConceptSet`) through its
``directions`` and training ``activations``; two concepts in two dimensions and three training samples:

>>> import torch
>>> from types import SimpleNamespace
>>> concepts = SimpleNamespace(directions=torch.tensor([[3.0, 4.0], [0.0, 2.0]]),
...                            activations=torch.tensor([[1.0, 0.0], [3.0, 0.5], [0.0, 1.5]]))
>>> concept_direction(concepts, 0)
tensor([0.6000, 0.8000])
>>> random_direction(concept_direction(concepts, 0), seed=0)      # same norm, any direction
tensor([ 0.9823, -0.1871])
>>> centred_direction(concepts, 0, mean=torch.tensor([1.0, 0.0]))  # its part along the mean state removed
tensor([0., 1.])
>>> states = torch.tensor([[1.0, 1.0], [5.0, 1.0], [1.0, 3.0]])     # the training samples' states
>>> diffmean_direction(concepts, 0, states, n_top=1)                  # sample 1 against the others
tensor([ 4., -1.])
>>> default_strength(concepts, 0)    # 16 x (mean positive activation 2.0 x norm 5.0)
160.0
>>> concept_direction(concepts, 2)
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: unknown concept 2: the dictionary has concepts 0..1
"""

from __future__ import annotations

import math
import operator

from mmconcepts.errors import MMConceptsError

#: The directions :func:`~mmconcepts.interventions.steer_captions.steer` adds (:func:`unit_direction`).
DIRECTIONS = ("concept", "centred", "random", "diffmean")
#: The default strength of :func:`~mmconcepts.interventions.steer_captions.steer`, in multiples of the concept's typical
#: contribution (:func:`default_strength`), with :data:`DEFAULT_POSITIONS`: calibrated on ShapesWorld by the
#: causal evaluation (:mod:`mmconcepts.evaluation.causal.interventions`): at the token's step, factors 8 / 16 / 32 steer
#: 0.33 / 0.58 / 0.68 of the Semi-NMF interventions with fluency 1.00 / 0.95 / 0.94; 16 is the largest that
#: keeps fluency at 0.95.
STRENGTH_FACTOR = 16.0
#: Where :func:`~mmconcepts.interventions.steer_captions.steer` intervenes by default: only the step that predicts the token
#: of interest (the state the dictionary was learnt on). From it on ("after"), captions degenerate first:
#: factors 1 / 2 / 4 steer 0.00 / 0.07 / 0.26 with fluency 1.00 / 0.96 / 0.73.
DEFAULT_POSITIONS = "token"


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise MMConceptsError(f"unknown {name} {value!r}: choose {', '.join(choices)}")
    return value


def _finite(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MMConceptsError(f"the {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise MMConceptsError(f"the {name} must be a finite number, got {value}; give e.g. --strength 8")
    return number


def check_concept(concepts, k) -> int:
    """``k`` as a concept index of ``concepts``, or a one-line error naming the valid range."""
    n = int(concepts.directions.shape[0])
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise MMConceptsError(f"the concept must be an index 0..{n - 1}, got {k!r}") from None
    if not 0 <= k < n:
        raise MMConceptsError(f"unknown concept {k}: {_where(concepts)} has concepts 0..{n - 1}")
    return k


def _where(concepts) -> str:
    path = getattr(concepts, "path", None)
    return f"the concepts folder {path}" if path is not None else "the dictionary"


def _points(concepts) -> bool:
    return bool(getattr(getattr(concepts, "dictionary", None), "concepts_are_points", False))


# ---- directions -------------------------------------------------------------------------------------------
def concept_direction(concepts, k: int):
    """The unit direction of concept ``k``.

    Parameters
    ----------
    concepts : ConceptSet
        A concepts folder read back (:func:`~mmconcepts.concepts.concept_set.load_concepts`).
    k : int
        The concept index (for a signed dictionary, PCA, concept ``K + k`` is the negative side ``-u_k``).

    Returns
    -------
    torch.Tensor
        ``D`` float32: ``directions[k] / ||directions[k]||``. For a dictionary whose concepts are points
        (K-Means, Simple) it is the point's direction from the origin.
    """
    k = check_concept(concepts, k)
    u = concepts.directions[k].float()
    norm = float(u.norm())
    if not math.isfinite(norm) or norm == 0:
        raise MMConceptsError(f"concept {k} of {_where(concepts)} has no direction (norm {norm}); learn it again")
    return u / norm


def random_direction(like, seed: int = 0):
    """A random direction with the norm of ``like``: the control of a steering experiment.

    Parameters
    ----------
    like : tensor or array-like
        The direction to match (its shape and norm).
    seed : int
        Seed of the normal draw (the same seed gives the same direction, on every machine: drawn on the CPU).

    Returns
    -------
    torch.Tensor
        float32, the shape of ``like``, ``||result|| == ||like||`` (up to rounding).
    """
    import torch

    like = torch.as_tensor(like).detach().float().cpu()
    generator = torch.Generator().manual_seed(int(seed))
    draw = torch.randn(like.shape, generator=generator)
    return draw * (like.norm() / draw.norm())


def diffmean_direction(concepts, k: int, Z, n_top: int | None = None):
    """The difference-of-means direction of concept ``k``: the AxBench-style baseline.

    Parameters
    ----------
    concepts : ConceptSet
        The concepts; ``concepts.activations`` (``N x n_concepts``) ranks the training samples.
    k : int
        The concept index.
    Z : ``N x D`` tensor or array
        The states of the same ``N`` training samples (in the order of the activations), at the layer to
        steer (usually the dictionary's: ``load_features(concepts.features, layer, concepts.token)``).
    n_top : int or None
        How many of the most activating samples are the concept's; ``None``: ``N // n_concepts`` (at least
        one), the share of the samples one concept would cover if each covered as many. Ties are broken by
        sample order.

    Returns
    -------
    torch.Tensor
        ``D`` float32: ``mean(Z[top]) - mean(Z[rest])``, not normalised.
    """
    import torch

    k = check_concept(concepts, k)
    from mmconcepts.concepts.activations import activation_column

    A = activation_column(concepts.activations, k)  # dense or sparse
    Z = torch.as_tensor(Z).detach().float().cpu()
    N = A.shape[0]
    if Z.ndim != 2 or Z.shape[0] != N:
        raise MMConceptsError(f"diffmean needs the states of the {N} training samples ({N} x D), got "
                              f"{tuple(Z.shape)}; read them from the concepts' feature store")
    if N < 2:
        raise MMConceptsError("diffmean needs at least two training samples")
    if n_top is None:
        n_top = max(1, N // int(concepts.directions.shape[0]))
    if isinstance(n_top, bool) or not isinstance(n_top, int) or not 1 <= n_top < N:
        raise MMConceptsError(f"n_top must be an integer 1..{N - 1} (the concept's samples among {N}), got {n_top!r}")
    top = torch.argsort(A, descending=True, stable=True)[:n_top]
    mask = torch.zeros(N, dtype=torch.bool)
    mask[top] = True
    return Z[mask].mean(dim=0) - Z[~mask].mean(dim=0)


def centred_direction(concepts, k: int, mean):
    """Concept ``k``'s unit direction less its component along the mean training state, normalised.

    Every concept of a non-negative dictionary (Semi-NMF, NMF) shares the mean state, which predicts the
    token of interest itself; removing that shared part keeps what sets the concept apart (on the demo it
    lifts Semi-NMF's steering success from 0.58 to 0.86, next to diffmean's 0.89: see
    :mod:`mmconcepts.evaluation.causal.interventions`).

    Parameters
    ----------
    concepts : ConceptSet
        The concepts.
    k : int
        The concept index.
    mean : ``D`` tensor or array
        The mean training state at the steered layer
        (:func:`~mmconcepts.extract.features.mean_feature`).

    Returns
    -------
    torch.Tensor
        ``D`` float32, unit norm, orthogonal to ``mean``.
    """
    import torch

    u = concept_direction(concepts, k)
    m = torch.as_tensor(mean).detach().float().cpu().reshape(-1)
    if m.shape != u.shape:
        raise MMConceptsError(f"the mean state has {m.numel()} dimensions, the concepts {u.numel()}; read it at "
                              "the concepts' layer")
    norm = float(m.norm())
    if norm > 0:
        m = m / norm
        u = u - (u @ m) * m
    rest = float(u.norm())
    if not math.isfinite(rest) or rest < 1e-6:
        raise MMConceptsError(f"concept {k} lies along the mean state: it has no centred direction; use "
                              "--direction concept")
    return u / rest


def unit_direction(concepts, k: int, direction: str = "concept", *, seed: int = 0, states=None, mean=None):
    """The unit direction a steering experiment adds for concept ``k`` (:data:`DIRECTIONS`).

    Parameters
    ----------
    concepts : ConceptSet
        The concepts.
    k : int
        The concept index.
    direction : ``"concept"``, ``"centred"``, ``"random"`` or ``"diffmean"``
        :func:`concept_direction`, :func:`centred_direction`, :func:`random_direction` (of the concept's unit
        norm) or :func:`diffmean_direction` normalised.
    seed : int
        Seed of ``"random"``.
    states, mean : tensor or zero-argument callable, optional
        The training states (``"diffmean"``) and their mean (``"centred"``) at the steered layer, or functions
        that read them (called only when needed).

    Returns
    -------
    torch.Tensor
        ``D`` float32, unit norm.
    """
    _choice("direction", direction, DIRECTIONS)
    if direction == "concept":
        return concept_direction(concepts, k)
    if direction == "random":
        return random_direction(concept_direction(concepts, k), seed)
    if direction == "centred":
        return centred_direction(concepts, k, mean() if callable(mean) else mean)
    d = diffmean_direction(concepts, k, states() if callable(states) else states)
    norm = float(d.norm())
    if norm == 0:
        raise MMConceptsError(f"the diffmean direction of concept {k} is zero; use --direction concept")
    return d / norm


def default_strength(concepts, k: int, factor: float = STRENGTH_FACTOR) -> float:
    """The default steering strength of concept ``k``: ``factor`` times its typical contribution.

    The typical contribution is the norm of ``s_k u_k``, with ``s_k`` the concept's typical activation
    (:func:`~mmconcepts.concepts.decoding.typical_strengths`: the mean of its positive training activations,
    the strength the "effect" decoding reads the concept at); for dictionaries of unit concepts (Semi-NMF,
    PCA) that is ``s_k`` itself. The default ``factor`` is :data:`STRENGTH_FACTOR` (calibrated, see there).

    Returns
    -------
    float
        A strength for a *unit* direction (:func:`concept_direction`).
    """
    from mmconcepts.concepts.decoding import typical_strengths

    k = check_concept(concepts, k)
    factor = _finite("strength factor", factor)
    s = float(typical_strengths(concepts.activations)[k]) * float(concepts.directions[k].float().norm())
    if s <= 0 or not math.isfinite(s):
        raise MMConceptsError(f"concept {k} is never active on the training samples, so it has no typical "
                              "strength; give the strength (--strength)")
    return s * factor


# ---- the intervention ---------------------------------------------------------------------------------------
