"""User-facing errors.

Every problem caused by the user's input (a missing file, an unknown layer, a malformed dataset) is raised
as :class:`MMConceptsError` with a one-line message that names the problem and what to do about it. The CLI
prints it as ``error: <message>`` and exits with status 2, without a traceback.
"""

from __future__ import annotations


class MMConceptsError(Exception):
    """An error caused by the user's input; its message is one line that names the problem and the fix."""

    exit_code = 2
