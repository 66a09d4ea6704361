"""Coverage split by attribute kind: which of the token object's values, and the other objects', are owned.

:func:`~mmconcepts.evaluation.grounding.ground_truth.coverage` pools every value of every object of an image.
Here a value is told apart by whose it is: the *token object*'s own colour, size and position (the first object
whose shape is the token, :func:`~mmconcepts.data.truth.token_object`; its shape is the token and is not
counted), or the *other* objects' shape, colour, size and position. The notion is the same as
``coverage``'s: a concept *owns* a value when every one of its ``n_top`` most activating training images has
it (for ``token``: its token object has it; for ``other``: one of its other objects has it), and only values
that at least ``n_top`` images have are considered.

Keys: ``coverage_token`` (all the token object's values together: the share a reader wants near 1),
``coverage_token_<attribute>`` for colour, size and position, ``coverage_other`` and
``coverage_other_<attribute>`` for shape, colour, size and position. A kind with no considered value is
absent.

Examples
--------
>>> import torch
>>> red = {"objects": [{"shape": "circle", "colour": "red", "size": "small", "position": "left"}]}
>>> blue = {"objects": [{"shape": "circle", "colour": "blue", "size": "small", "position": "left"}]}
>>> coverage_by_kind(torch.tensor([[1.0], [0.0]]), [red, blue], "circle", n_top=1)["coverage_token_colour"]
0.5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mmconcepts.errors import MMConceptsError

__all__ = ["COVERAGE_KEYS", "COVERAGE_KINDS", "coverage_by_kind", "kind_values"]

#: ``(whose, attribute)`` pairs reported, in order.
COVERAGE_KINDS = (("token", "colour"), ("token", "size"), ("token", "position"),
                  ("other", "shape"), ("other", "colour"), ("other", "size"), ("other", "position"))
#: Every key of :func:`coverage_by_kind`, in order.
COVERAGE_KEYS = ("coverage_token", *(f"coverage_token_{a}" for w, a in COVERAGE_KINDS if w == "token"),
                 "coverage_other", *(f"coverage_other_{a}" for w, a in COVERAGE_KINDS if w == "other"))


def kind_values(record: dict, token: str) -> set[tuple[str, str, str]]:
    """The ``(whose, attribute, value)`` triples of one image: its token object's and its other objects'.

    Parameters
    ----------
    record : dict
        The image's ground truth ``{"objects": [{"shape", "colour", "size", "position", ...}, ...]}``.
    token : str
        The shape of interest.

    Returns
    -------
    set of tuple

    Examples
    --------
    >>> sorted(kind_values({"objects": [{"shape": "square", "colour": "red"},
    ...                                 {"shape": "circle", "colour": "red"}]}, "circle"))
    [('other', 'colour', 'red'), ('other', 'shape', 'square'), ('token', 'colour', 'red')]
    """
    from mmconcepts.data.truth import token_object

    objects = record.get("objects") if isinstance(record, dict) else None
    if not isinstance(objects, list):
        raise MMConceptsError("coverage by kind needs ShapesWorld records with an 'objects' list; use features "
                              "extracted from a ShapesWorld dataset")
    own = token_object(objects, token)
    values = set()
    for obj in objects:
        whose = "token" if obj is own else "other"
        for w, attribute in COVERAGE_KINDS:
            if w == whose and obj.get(attribute) is not None:
                values.add((whose, attribute, obj[attribute]))
    return values


def coverage_by_kind(activations, train_attributes: Sequence[dict], token: str, n_top: int = 5) -> dict:
    """Share of each kind's attribute values owned by some concept (see the module docstring).

    Parameters
    ----------
    activations : (N, K) torch.Tensor or array-like
        Concept activations of the training images.
    train_attributes : list of dict
        The ground-truth record of each training image, in the same order.
    token : str
        The shape of interest.
    n_top : int
        How many top images define a concept (``min(n_top, N)``).

    Returns
    -------
    dict
        ``{"coverage_token": ..., "coverage_token_colour": ..., ..., "coverage_other_position": ...}``, each in
        [0, 1]; a kind without a considered value is absent.

    Raises
    ------
    MMConceptsError
        When the activations and records disagree or are empty.
    """
    import torch

    A = torch.as_tensor(activations).float()
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise MMConceptsError(f"activations must be a non-empty N x K matrix, got shape {tuple(A.shape)}")
    if A.shape[0] != len(train_attributes):
        raise MMConceptsError(f"{A.shape[0]} activation rows but {len(train_attributes)} attribute records; pass "
                              "the training activations with the metadata of the same samples")
    if n_top < 1:
        raise MMConceptsError(f"n_top must be at least 1, got {n_top}")
    n = min(int(n_top), A.shape[0])
    values = [kind_values(r, token) for r in train_attributes]
    counts = Counter(v for vs in values for v in vs)
    considered = {v for v, c in counts.items() if c >= n}
    owned = set()
    for images in A.topk(n, dim=0).indices.T.tolist():
        owned |= set.intersection(*(values[i] for i in images)) & considered
    out = {}
    groups = {"token": [], "other": []}
    for whose, attribute in COVERAGE_KINDS:
        group = [v for v in considered if v[:2] == (whose, attribute)]
        groups[whose].extend(group)
        if group:
            out[f"coverage_{whose}_{attribute}"] = sum(v in owned for v in group) / len(group)
    for whose in ("other", "token"):
        if groups[whose]:
            out[f"coverage_{whose}"] = sum(v in owned for v in groups[whose]) / len(groups[whose])
    return {key: out[key] for key in COVERAGE_KEYS if key in out}
