"""A dataset's fingerprint: what a run record keeps to tell later whether the data is still the same.

The fingerprint is the SHA-256 of the file that lists the samples (``captions.jsonl``, ``captions.csv``, a
Karpathy ``.json``) or, for a folder saved by Hugging Face ``datasets``, of its JSON records (they name the
Arrow files and their own fingerprints). Images are not read: a store's rows name their images, and a
dataset whose list is unchanged is taken to be the same data.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def _update_with_file(digest, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def fingerprint(source: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of a dataset file, or of the JSON records of a dataset folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "captions.jsonl"; _ = f.write_text("{}\\n")
    >>> fingerprint(f)[:15]
    'sha256:ca3d163b'
    """
    source = Path(source)
    digest = hashlib.sha256()
    if source.is_dir():
        for path in sorted(source.rglob("*.json")):
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            _update_with_file(digest, path)
    else:
        _update_with_file(digest, source)
    return "sha256:" + digest.hexdigest()
