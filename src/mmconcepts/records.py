"""Typed records of the files the pipeline writes: one class per file, and the only way those files are read.

``docs/FORMAT.md`` is the normative description of every file; these classes follow it (a divergence is a
bug). A record is a dataclass whose fields are the entries a reader relies on, each checked for its type
on read (:meth:`Record.from_json`); entries it does not declare are kept in ``extra`` and written back, so
a file written by a newer mmconcepts round-trips. What a record cannot check alone, it checks against its
siblings (:func:`check_concepts_folder`, :func:`check_shard`): a shard's dtype and width against the
manifest, a dictionary's size and the layer recorded inside its safetensors header against
``summary.json``, every concept present in ``grounding.json``. Every mismatch is a one-line
:class:`~mmconcepts.errors.MMConceptsError` naming the file and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import read_json, write_json

_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict,
          "object": object}


def _accepts(annotation: str, value) -> bool:
    """Whether ``value`` fits a field annotation written as a string (``"int | None"``, ``"list"``, ...)."""
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None":
            if value is None:
                return True
            continue
        kind = _TYPES.get(part.split("[")[0], object)
        if kind is int and isinstance(value, bool):
            continue
        if kind in (float, (int, float)) and isinstance(value, bool):
            continue
        if isinstance(value, kind):
            return True
    return False


@dataclasses.dataclass(kw_only=True)
class Record:
    """Base of the file records: declared fields checked on read, the rest carried in ``extra``."""

    FILE: ClassVar[str] = ""
    FIX: ClassVar[str] = "make the folder again"

    extra: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def _fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike | None = None):
        """The record of a JSON object, every declared entry checked; a one-line error naming ``source``."""
        where = source or cls.FILE
        if not isinstance(data, dict):
            raise MMConceptsError(f"{where} is not a JSON object; {cls.FIX}")
        values, extra = {}, {}
        declared = {f.name: f for f in cls._fields()}
        for key, value in data.items():
            if key == "format_version":
                continue
            (values if key in declared else extra)[key] = value
        for name, field in declared.items():
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if name not in values:
                if required:
                    raise MMConceptsError(f"{where} has no {name!r} entry; {cls.FIX}")
                continue
            if not _accepts(str(field.type), values[name]):
                raise MMConceptsError(f"{where}: {name!r} should be {field.type}, not {type(values[name]).__name__} "
                                      f"{_short(values[name])}; {cls.FIX}")
        record = cls(**values, extra=extra)
        record.validate(where)
        return record

    def validate(self, where) -> None:
        """Checks that span several entries (overridden per file); raise a one-line error."""

    def to_json(self) -> dict:
        """The JSON object (declared entries, then the extra ones), without ``format_version``."""
        out = {f.name: getattr(self, f.name) for f in self._fields()}
        return {**out, **self.extra}

    @classmethod
    def read(cls, folder: str | os.PathLike):
        """Read ``folder/FILE`` (a one-line error when it is missing, corrupt, newer or malformed)."""
        path = Path(folder) / cls.FILE
        return cls.from_json(read_json(path, cls.FIX), path)

    def write(self, folder: str | os.PathLike, indent: int | None = 2) -> Path:
        """Write ``folder/FILE`` atomically, with ``format_version``."""
        return write_json(Path(folder) / self.FILE, self.to_json(), indent=indent)


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def changed_setting(old: dict, new: dict, ignore: Collection[str] = (), prefix: str = ""
                    ) -> tuple[str, object, object] | None:
    """The first setting on which two run records (a store's manifest, a benchmark's settings) differ.

    Nested objects are compared entry by entry; a list and a tuple of the same items are the same setting
    (a tuple is read back from JSON as a list).

    Parameters
    ----------
    old, new : dict
    ignore : collection of str
        Dotted names that may differ (counts, versions, where the run ran).
    prefix : str
        Prepended to the names (for nested records).

    Returns
    -------
    (str, object, object) or None
        The dotted name and both values; ``None`` when they agree.

    Examples
    --------
    >>> changed_setting({"seeds": [0, 1], "model": {"device": "cpu"}}, {"seeds": [0], "model": {"device": "cuda"}},
    ...                 ignore={"model.device"})
    ('seeds', [0, 1], [0])
    >>> changed_setting({"layers": ["0", "norm"]}, {"layers": ("0", "norm")}) is None
    True
    """
    for key in dict.fromkeys([*old, *new]):
        name = prefix + key
        if name in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = changed_setting(a, b, ignore, name + ".")
            if found:
                return found
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            return name, a, b
    return None


def _check_count(where, name: str, value, fix: str, low: int = 0) -> None:
    if value is not None and value < low:
        raise MMConceptsError(f"{where}: {name!r} is {value}, below {low}; {fix}")


# ---------------------------------------------------------------------------------------------- feature store

STORE_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}


@dataclasses.dataclass(kw_only=True)
class Manifest(Record):
    """``manifest.json`` of a feature store: the run record (see docs/FORMAT.md)."""

    FILE: ClassVar[str] = "manifest.json"
    FIX: ClassVar[str] = "extract the features again"

    layers: list
    dtype: str
    hidden_size: int
    model: str | None = None
    token: str | None = None
    tokens: list | None = None
    complete: bool = False
    n_samples: int | None = None
    n_shards: int | None = None
    num_layers: int | None = None
    shard_size: int | None = None
    counts: dict | None = None

    def validate(self, where) -> None:
        if not self.layers or not all(isinstance(x, str) for x in self.layers):
            raise MMConceptsError(f"{where} lists no layers; {self.FIX}")
        if self.dtype not in STORE_DTYPES:
            raise MMConceptsError(f"{where}: unknown storage dtype {self.dtype!r} (expected "
                                  f"{', '.join(STORE_DTYPES)}); {self.FIX}")
        if self.token is None and not self.tokens:
            raise MMConceptsError(f"{where} names no token of interest; {self.FIX}")
        _check_count(where, "hidden_size", self.hidden_size, self.FIX, 1)
        for name in ("n_samples", "n_shards", "shard_size"):
            _check_count(where, name, getattr(self, name), self.FIX)
        if self.complete and (self.n_samples is None or self.n_shards is None):
            raise MMConceptsError(f"{where} is marked complete without n_samples and n_shards; {self.FIX}")


@dataclasses.dataclass(kw_only=True)
class Progress(Record):
    """``progress.json`` of a feature store: what is committed (for ``--resume``)."""

    FILE: ClassVar[str] = "progress.json"
    FIX: ClassVar[str] = "extract again with --overwrite"

    shards: int
    pending: int = 0  # stores of format 1 wrote none
    n_samples: int
    n_captions: int = 0
    position: int
    counts: dict = dataclasses.field(default_factory=dict)

    def validate(self, where) -> None:
        for name in ("shards", "pending", "n_samples", "n_captions", "position"):
            _check_count(where, name, getattr(self, name), self.FIX)
        if self.pending > self.n_samples:
            raise MMConceptsError(f"{where}: {self.pending} pending rows of {self.n_samples}; {self.FIX}")


@dataclasses.dataclass(kw_only=True)
class MetadataRow(Record):
    """One line of ``metadata.jsonl``: a kept (image, word) sample."""

    FILE: ClassVar[str] = "metadata.jsonl"
    FIX: ClassVar[str] = "extract the features again"

    id: object = None
    index: int | None = None
    image: str | None = None
    caption: str = ""
    token: str | None = None
    position: int | None = None


def read_jsonl(file: str | os.PathLike, record: type[Record] | None = None, fix: str = "extract the features again"
               ) -> list[dict]:
    """The rows of a JSON Lines file, each an object (and, with ``record``, checked by it); a one-line error
    naming the file and the line of the first bad row.

    Examples
    --------
    >>> _ = open("metadata.jsonl", "w").write('{"index": 0}\\n{"index": "one"}\\n')
    >>> read_jsonl("metadata.jsonl", MetadataRow)
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: metadata.jsonl line 2: 'index' should be int | None, not str "one"; ...
    """
    file = Path(file)
    rows = []
    try:
        with open(file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise MMConceptsError(f"{file} line {number} is not valid JSON; {fix}") from None
                if not isinstance(row, dict):
                    raise MMConceptsError(f"{file} line {number} is not a JSON object; {fix}")
                if record is not None:
                    record.from_json(row, f"{file} line {number}")
                rows.append(row)
    except UnicodeDecodeError:
        raise MMConceptsError(f"{file} is not UTF-8 text; {fix}") from None
    except OSError as exc:
        from mmconcepts.outputs import os_error

        raise os_error(exc, f"cannot read {file}") from None
    return rows


def check_shard(file: str | os.PathLike, manifest) -> int:
    """Check a shard's header against the store's manifest (tensor ``features``, storage dtype, width
    ``hidden_size``); its number of rows."""
    from safetensors import safe_open

    file = Path(file)
    fix = "extract the features again"
    try:
        with safe_open(str(file), framework="pt") as f:
            if "features" not in f.keys():
                raise MMConceptsError(f"{file} holds no 'features' tensor; {fix}")
            sliced = f.get_slice("features")
            shape, dtype = list(sliced.get_shape()), sliced.get_dtype()
    except MMConceptsError:
        raise
    except FileNotFoundError:
        raise MMConceptsError(f"{file} is missing; {fix}") from None
    except Exception as exc:  # safetensors raises its own types for a truncated or foreign file
        raise MMConceptsError(f"cannot read {file} ({type(exc).__name__}); {fix}") from None
    expected = STORE_DTYPES.get(manifest["dtype"])
    if dtype != expected:
        raise MMConceptsError(f"{file} is stored as {dtype}, but the manifest says {manifest['dtype']} ({expected}); "
                              f"{fix}")
    if len(shape) != 2 or shape[1] != manifest["hidden_size"]:
        raise MMConceptsError(f"{file} has shape {shape}, expected rows x {manifest['hidden_size']} (the "
                              f"manifest's hidden_size); {fix}")
    return int(shape[0])


# ------------------------------------------------------------------------------------------- concepts folder

@dataclasses.dataclass(kw_only=True)
class Summary(Record):
    """``summary.json`` of a concepts folder: what was learnt, from where, how well.

    Examples
    --------
    Entries the record does not declare are kept in ``extra`` and written back:

    >>> summary = Summary(method="semi-nmf", layer="norm", n_samples=478, n_concepts=20, hidden_size=192,
    ...                   features="../features", extra={"seconds": 1.4})
    >>> again = Summary.read(summary.write(".").parent)
    >>> again == summary, again.extra
    (True, {'seconds': 1.4})
    >>> Summary.from_json({**summary.to_json(), "n_concepts": "20"}, "concepts/summary.json")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: concepts/summary.json: 'n_concepts' should be int, not str "20"; run ...
    """

    FILE: ClassVar[str] = "summary.json"
    FIX: ClassVar[str] = "run `mmconcepts learn` again"

    method: str
    layer: str
    n_samples: int
    n_concepts: int
    hidden_size: int
    features: str
    token: str | None = None
    model: str | None = None

    def validate(self, where) -> None:
        if not self.method or not self.layer:
            raise MMConceptsError(f"{where} names no method or layer; {self.FIX}")
        _check_count(where, "n_concepts", self.n_concepts, self.FIX, 1)
        _check_count(where, "hidden_size", self.hidden_size, self.FIX, 1)
        _check_count(where, "n_samples", self.n_samples, self.FIX)


@dataclasses.dataclass(kw_only=True)
class Grounding(Record):
    """``grounding.json`` of a concepts folder: every concept's words and top images."""

    FILE: ClassVar[str] = "grounding.json"
    FIX: ClassVar[str] = "run `mmconcepts learn` again"

    concepts: list

    def validate(self, where) -> None:
        for i, concept in enumerate(self.concepts):
            if not isinstance(concept, dict) or concept.get("index") != i:
                raise MMConceptsError(f"{where}: concept {i} is missing or out of place; {self.FIX}")
            if not isinstance(concept.get("words"), list) or not all(
                    isinstance(w, dict) and isinstance(w.get("word"), str) for w in concept["words"]):
                raise MMConceptsError(f"{where}: concept {i} has malformed words; {self.FIX}")
            if not isinstance(concept.get("images"), list) or not all(
                    isinstance(im, dict) and isinstance(im.get("image"), str) for im in concept["images"]):
                raise MMConceptsError(f"{where}: concept {i} has malformed images; {self.FIX}")
