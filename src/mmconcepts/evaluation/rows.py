"""Typed metric rows: what one evaluation hands the next, and how a row becomes JSON.

A row of ``metrics.json`` (``methods`` and ``baselines``) is ``{metric: value}`` where a metric that does not
apply is absent, never zero. Each evaluation returns its part of a row as a small frozen dataclass whose fields
are the metrics, ``None`` meaning absent: the grounding row (:class:`~.grounding.scoring.GroundingRow`), the
causal row (:class:`~.causal.scores.CausalRow`), the concept maps' row
(:class:`~.attribution.map_scores.MapScores`); the extended metrics, whose keys depend on their settings, are
:class:`~.extended.collect.ExtendedRow`. :class:`Row` is their base: a read-only mapping of the metrics that
apply, in field order, so that ``{**grounding, **causal}`` is the merged row of ``metrics.json`` and
:meth:`Row.to_json` its JSON.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, eq=False)
... class Scores(Row):
...     precision: float | None = None
...     recall: float | None = None
>>> row = Scores(recall=0.5)
>>> row.to_json(), row == {"recall": 0.5}, "precision" in row
({'recall': 0.5}, True, False)
>>> mean([1.0, None, 2.0]), mean([])
(1.5, None)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields

__all__ = ["Row", "mean"]


def mean(values: Iterable[float | None], *, empty: float | None = None) -> float | None:
    """The mean of the values that are not ``None``, as a float; ``empty`` when there are none.

    Examples
    --------
    >>> mean([0.25, 0.75]), mean([None], empty=float("nan"))
    (0.5, nan)
    """
    kept = [v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else empty


class Row(Mapping):
    """Base of the frozen metric rows (subclasses are ``@dataclass(frozen=True, eq=False)``).

    The row reads as the mapping of its fields that are not ``None``, in field order; it equals any mapping
    with the same items.
    """

    def to_json(self) -> dict:
        """The metrics that apply, ``{name: value}`` in field order (``None`` fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __getitem__(self, key: str):
        value = self.to_json().get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())
