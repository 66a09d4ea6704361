"""Files the project writes: atomic writes, versioned JSON, and paths between folders that survive a move.

Every JSON file mmconcepts writes goes through :func:`write_json`, which writes it atomically (a temp file
beside it, then ``os.replace``) and stamps it with ``"format_version"``; :func:`read_json` reads it back
with a one-line error for a missing, corrupt or newer file.

Folders refer to each other (a concepts folder to its feature store, a store to its dataset, an evaluation
folder to both) through :func:`link`: a path *relative to the referring folder* when the two sit side by
side (they share an ancestor below the filesystem root), an absolute path otherwise. :func:`resolve` turns
it back into a path, so a run directory can be moved, copied or shared and every command still finds its
parts.

Examples
--------
>>> link("/runs/dog/features", "/runs/dog/concepts")
'../features'
>>> str(resolve("../features", "/elsewhere/dog/concepts"))
'/elsewhere/dog/features'
>>> link("/data/coco", "/home/me/runs")
'/data/coco'
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.outputs import os_error, umask

#: Version of every JSON layout the project writes (``"format_version"`` in each file).
FORMAT_VERSION = 2


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never a part (a temp
    file beside it, flushed to disk, then ``os.replace``; the mode a new file would get)."""
    import tempfile

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise os_error(exc, f"cannot write {path}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(exc, f"cannot write {path}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` (a dict) as JSON atomically, with ``"format_version"`` first.

    Examples
    --------
    >>> write_json("summary.json", {"method": "semi-nmf", "n_concepts": 20}, indent=None)
    PosixPath('summary.json')
    >>> open("summary.json").read()
    '{"format_version": 2, "method": "semi-nmf", "n_concepts": 20}'
    >>> read_json("summary.json", "run mmconcepts learn again")["n_concepts"]
    20
    """
    if not isinstance(obj, dict):
        raise TypeError("write_json writes objects (dicts); wrap lists in a dict")
    return atomic_write_text(path, json.dumps({"format_version": FORMAT_VERSION, **obj}, indent=indent))


def read_json(path: str | os.PathLike, fix: str) -> dict:
    """Read a JSON object written by :func:`write_json` (or by an older mmconcepts, without a version).

    ``fix`` is what the user should do when the file is missing or unreadable (``"run mmconcepts learn
    again"``); it ends the one-line error.

    Examples
    --------
    >>> read_json("runs/concepts/summary.json", "run mmconcepts learn again")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: runs/concepts/summary.json not found; run mmconcepts learn again
    >>> _ = atomic_write_text("newer.json", '{"format_version": 99}')
    >>> read_json("newer.json", "run mmconcepts learn again")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: newer.json has format_version 99, newer than this mmconcepts reads (2); ...
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MMConceptsError(f"{path} not found; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MMConceptsError(f"{path} is corrupt; {fix}") from None
    except OSError as exc:
        raise MMConceptsError(f"cannot read {path} ({exc.strerror}); {fix}") from None
    if not isinstance(data, dict):
        raise MMConceptsError(f"{path} is not an mmconcepts file; {fix}")
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MMConceptsError(f"{path} has format_version {version!r}, newer than this mmconcepts reads "
                              f"({FORMAT_VERSION}); upgrade mmconcepts")
    return data


def link(target: str | os.PathLike, base: str | os.PathLike) -> str:
    """How the folder ``base`` refers to ``target``: relative when they sit side by side, else absolute."""
    target, base = Path(target).resolve(), Path(base).resolve()
    try:
        common = Path(os.path.commonpath([target, base]))
    except ValueError:  # different drives
        return str(target)
    if common == Path(common.anchor):
        return str(target)
    return os.path.relpath(target, base)


def resolve(stored: str | os.PathLike, base: str | os.PathLike) -> Path:
    """The path a :func:`link` stored in the folder ``base`` points to."""
    path = Path(stored)
    return path if path.is_absolute() else Path(os.path.normpath(Path(base).resolve() / path))


def link_fields(key: str, target: str | os.PathLike, base: str | os.PathLike) -> dict:
    """``{key: link(target, base), key + "_absolute": target}``: the link, and where it pointed when written
    (the fallback of :func:`resolve_field` when only one of the two folders moved).

    Examples
    --------
    >>> link_fields("features", "/runs/dog/features", "/runs/dog/concepts")
    {'features': '../features', 'features_absolute': '/runs/dog/features'}
    """
    return {key: link(target, base), f"{key}_absolute": str(Path(target).resolve())}


def resolve_field(record: dict, key: str, base: str | os.PathLike) -> Path:
    """The path of a :func:`link_fields` entry: the link if it leads somewhere, else the absolute path it
    had when written (if that still exists), else the link (so the caller's error names it).

    Examples
    --------
    A concepts folder moved away from its feature store still finds it by the absolute path:

    >>> import os
    >>> from pathlib import Path
    >>> os.makedirs("runs/features"); os.makedirs("runs/concepts")
    >>> record = link_fields("features", "runs/features", "runs/concepts")
    >>> os.rename("runs/concepts", "moved")
    >>> resolve_field(record, "features", "moved") == Path("runs/features").resolve()
    True
    """
    stored = record.get(key)
    if not isinstance(stored, str) or not stored:
        raise MMConceptsError(f"{Path(base) / '...'}: the record has no {key!r} path; make the folder again")
    path = resolve(stored, base)
    fallback = record.get(f"{key}_absolute")
    if not path.exists() and isinstance(fallback, str) and Path(fallback).exists():
        return Path(fallback)
    return path
