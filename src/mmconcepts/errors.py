"""User-facing errors.

Every problem caused by the user's input (a missing file, an unknown layer, a malformed dataset, a bad
parameter) is raised as :class:`MMConceptsError` with a one-line message that names the problem and what to
do about it. The CLI prints it as ``error: <message>`` and exits with status 2, without a traceback.

:class:`MMConceptsError` is a :class:`ValueError`, so code written for scikit-learn (which expects bad input
and bad parameters to raise ``ValueError``) handles it too. Programmer errors are not MMConceptsErrors:
using a concept dictionary before fitting it raises :class:`sklearn.exceptions.NotFittedError`.
"""

from __future__ import annotations


class MMConceptsError(ValueError):
    """An error caused by the user's input; its message is one line that names the problem and the fix.

    Attributes
    ----------
    exit_code : int
        Exit status of the command-line interface for this error (2).
    """

    exit_code = 2


def check_count(name: str, value, low: int = 1, *, optional: bool = False) -> int:
    """``value`` if it is an integer ``>= low`` (or None when ``optional``), else a one-line
    :class:`MMConceptsError` naming ``name`` (e.g. ``"limit (--limit)"``): a count, index or seed is never
    read modulo its length (a negative ``limit`` is not "all but the last").

    >>> check_count("limit (--limit)", 3)
    3
    >>> check_count("limit (--limit)", -1)
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: limit (--limit) must be an integer >= 1, got -1
    """
    if optional and value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MMConceptsError(f"{name} must be an integer >= {low}, got {value!r}")
    return value
