"""Reader for folders written by Hugging Face ``datasets`` (``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``).

A saved ``Dataset`` folder holds ``state.json`` and ``dataset_info.json``; a saved ``DatasetDict`` folder holds
``dataset_dict.json`` and one such folder per split. ``datasets`` is an optional dependency: it is imported only
when such a folder is read.

Images stored in the dataset itself (a ``datasets.Image`` column) have no file of their own, so a sample's
``image`` is a *reference path*: ``<dataset folder>/<split>#<row>`` for a ``DatasetDict`` split and
``<dataset folder>/#<row>`` for a plain ``Dataset`` (``row`` indexes the saved, unfiltered table).
:func:`mmconcepts.data.load_image` opens such a path through :func:`open_reference`. Images given as path
strings keep their real file path.

Examples
--------
>>> import datasets
>>> from PIL import Image
>>> colours = datasets.Dataset.from_dict({"image": [Image.new("RGB", (32, 24), "red")],
...                                       "caption": ["a red square"]})
>>> datasets.DatasetDict({"test": colours}).save_to_disk("colours_hf")
>>> from mmconcepts.data import open_dataset
>>> data = open_dataset("colours_hf", split="test")
>>> data.kind, data[0].image.name, data[0].captions
('hf', 'test#0', ['a red square'])
>>> data[0].load().size
(32, 24)
"""

from __future__ import annotations

import functools
import io
import json
import re
from pathlib import Path

from mmconcepts.data.readers import Dataset, ImageLoadError, Sample, _inside, _open_rgb
from mmconcepts.errors import MMConceptsError

CAPTION_COLUMNS = ("caption", "captions", "sentences", "text")
ID_COLUMNS = ("id", "image_id", "cocoid")
REFERENCE = re.compile(r"^(?P<split>[^#/]*)#(?P<row>\d+)$")


def hf_layout(folder: str | Path) -> str | None:
    """The layout of a saved Hugging Face dataset folder.

    Parameters
    ----------
    folder : str or Path
        A folder that may have been written by ``save_to_disk``.

    Returns
    -------
    str or None
        ``"dict"`` for a ``DatasetDict`` (``dataset_dict.json``), ``"dataset"`` for a ``Dataset``
        (``state.json`` and ``dataset_info.json``), ``None`` otherwise.
    """
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file():
        return "dict"
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return "dataset"
    return None


def _import_datasets(folder: Path):
    try:
        import datasets
    except ImportError:
        raise MMConceptsError(f"{folder} is a saved Hugging Face dataset, which needs the optional dependency "
                              "`datasets`; install it with `pip install datasets`") from None
    return datasets


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _splits(folder: Path) -> list[str]:
    try:
        info = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))
        splits = info["splits"]
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise TypeError("'splits' is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MMConceptsError(f"{folder / 'dataset_dict.json'}: unreadable ({_one_line(exc)}); save the dataset "
                              "again with DatasetDict.save_to_disk") from None
    return splits


@functools.lru_cache(maxsize=16)
def _load_cached(directory: str, stamp: int | None):
    datasets = _import_datasets(Path(directory))
    return datasets.Dataset.load_from_disk(directory)


def load_split(folder: str | Path, split: str = ""):
    """Load one saved table (memory-mapped), cached per folder and split.

    Parameters
    ----------
    folder : str or Path
        A saved ``Dataset`` folder (``split=""``) or a saved ``DatasetDict`` folder.
    split : str
        The ``DatasetDict`` split to load; ``""`` for a plain ``Dataset``.

    Returns
    -------
    datasets.Dataset
        The table. Loads are cached with :func:`functools.lru_cache`, keyed on the folder and the modification
        time of its ``state.json``, so repeated image loads are cheap and a re-saved folder is read afresh.

    Raises
    ------
    MMConceptsError
        If ``datasets`` is not installed or the folder cannot be loaded.
    """
    folder = Path(folder).resolve()
    directory = folder / split if split else folder
    try:
        stamp = (directory / "state.json").stat().st_mtime_ns
    except OSError:
        stamp = None
    _import_datasets(folder)
    try:
        return _load_cached(str(directory), stamp)
    except MMConceptsError:
        raise
    except Exception as exc:  # datasets raises many types for a damaged folder
        raise MMConceptsError(f"cannot load the Hugging Face dataset {directory} ({_one_line(exc)}); save it "
                              "again with save_to_disk") from None


@functools.lru_cache(maxsize=16)
def _image_view(table, column: str):
    """``table`` reduced to one column, formatted as Arrow (cached: building it per image would be slow)."""
    return table.select_columns([column]).with_format("arrow")


def _image_kind(feature) -> str | None:
    """``"embedded"`` (image bytes in the table), ``"path"`` (a file path string) or ``None``."""
    import datasets

    if isinstance(feature, datasets.Image):
        return "embedded"
    if isinstance(feature, dict) and "bytes" in feature:
        return "embedded"
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("binary", "large_binary"):
            return "embedded"
        if feature.dtype in ("string", "large_string"):
            return "path"
    return None


def reference_column(features) -> str | None:
    """The column a reference path reads: ``image`` if it holds embedded images, else the only such column."""
    if "image" in features and _image_kind(features["image"]) == "embedded":
        return "image"
    embedded = [name for name, feature in features.items() if _image_kind(feature) == "embedded"]
    return embedded[0] if len(embedded) == 1 else None


def _captions(value, where: str, column: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):  # a struct {"raw": ...}, or a Sequence of structs stored as a struct of lists
        raw = value.get("raw")
        if isinstance(raw, str):
            return [raw.strip()]
        if isinstance(raw, list) and all(isinstance(r, str) for r in raw):
            return [r.strip() for r in raw]
    elif isinstance(value, list):
        captions = []
        for item in value:
            if isinstance(item, str):
                captions.append(item)
            elif isinstance(item, dict) and isinstance(item.get("raw"), str):
                captions.append(item["raw"].strip())
            else:
                break
        else:
            return captions
    raise MMConceptsError(f"{where}, column {column!r}: expected a string, a list of strings or a list of "
                          f"{{'raw': str}} dicts, got {_describe(value)}; fix the row or pick another column "
                          "with --caption-column")


def _describe(value) -> str:
    if isinstance(value, list):
        inner = sorted({type(v).__name__ for v in value})
        return f"a list of {'/'.join(inner)}"
    return type(value).__name__


def _column_values(table, column: str, rows: list[int] | None) -> list:
    """Values of one column for the given rows (all rows if ``None``), without decoding images."""
    values = table.with_format("arrow")[column]
    if rows is not None:
        import pyarrow as pa

        values = values.take(pa.array(rows, type=pa.int64()))
    return values.to_pylist()


def read_hf(folder: str | Path, image_root: str | Path | None = None, split: str | None = None,
            limit: int | None = None, image_column: str | None = None,
            caption_column: str | None = None) -> Dataset:
    """Read a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``.

    Parameters
    ----------
    folder : str or Path
        The saved dataset folder.
    image_root : str or Path, optional
        Where path-string images are resolved; defaults to ``folder``. Paths must stay inside it.
    split : str, optional
        For a ``DatasetDict``, the split to read (may be omitted when there is only one). For a ``Dataset``,
        keeps the rows whose ``split`` column equals it (or is null); ignored without such a column.
    limit : int, optional
        Keep at most this many samples (after the split filter).
    image_column : str, optional
        The column holding the images (``datasets.Image`` or path strings); default ``"image"``.
    caption_column : str, optional
        The column holding the captions (a string, a list of strings, or a list of ``{"raw": str}`` dicts);
        default: the first of ``caption``, ``captions``, ``sentences``, ``text`` present.

    Returns
    -------
    Dataset
        ``kind="hf"``, ``source`` and ``root`` the folder. Embedded images get reference paths
        (``<folder>/<split>#<row>`` or ``<folder>/#<row>``) that :func:`mmconcepts.data.load_image` opens.

    Raises
    ------
    MMConceptsError
        A missing column, a bad caption cell, an unknown or ambiguous split, an image path outside the root,
        or ``datasets`` not installed.
    """
    folder = Path(folder)
    layout = hf_layout(folder)
    if layout is None:
        raise MMConceptsError(f"{folder} is not a saved Hugging Face dataset (no dataset_dict.json, or "
                              "state.json + dataset_info.json); write it with save_to_disk")
    _import_datasets(folder)
    root = Path(image_root) if image_root is not None else folder
    if layout == "dict":
        splits = _splits(folder)
        if not splits:
            raise MMConceptsError(f"{folder}: the DatasetDict has no splits; save one with at least one split")
        if split is None:
            if len(splits) > 1:
                raise MMConceptsError(f"{folder} holds several splits; choose one with --split: "
                                      f"{', '.join(splits)}")
            split = splits[0]
        elif split not in splits:
            raise MMConceptsError(f"{folder}: no split {split!r}; choose one with --split: {', '.join(splits)}")
        table_split, label = split, f"{folder} [{split}]"
    else:
        table_split, label = "", str(folder)
    table = load_split(folder, table_split)
    features = table.features
    columns = ", ".join(features) or "none"

    image_column = image_column or "image"
    if image_column not in features:
        raise MMConceptsError(f"{label}: no image column {image_column!r} (columns: {columns}); pick one with "
                              "--image-column")
    kind = _image_kind(features[image_column])
    if kind is None:
        raise MMConceptsError(f"{label}: column {image_column!r} holds neither images nor path strings "
                              f"({features[image_column]}); pick another with --image-column")
    if kind == "embedded" and reference_column(features) != image_column:
        raise MMConceptsError(f"{label}: column {image_column!r} holds images, but several columns do and image "
                              "references read only 'image'; rename it to 'image' or drop the other image "
                              "columns")
    if caption_column is None:
        caption_column = next((c for c in CAPTION_COLUMNS if c in features), None)
        if caption_column is None:
            raise MMConceptsError(f"{label}: no caption column (looked for {', '.join(CAPTION_COLUMNS)}; columns: "
                                  f"{columns}); pick one with --caption-column")
    elif caption_column not in features:
        raise MMConceptsError(f"{label}: no caption column {caption_column!r} (columns: {columns}); pick one with "
                              "--caption-column")

    n = len(table)
    split_values = None
    if layout == "dataset" and split is not None and "split" in features:
        split_values = _column_values(table, "split", None)
        rows = [i for i, value in enumerate(split_values) if value is None or value == split]
    else:
        rows = list(range(n))
    if limit is not None:
        rows = rows[:limit]
    subset = None if len(rows) == n else rows

    captions = _column_values(table, caption_column, subset)
    id_column = next((c for c in ID_COLUMNS if c in features), None)
    ids = _column_values(table, id_column, subset) if id_column else [None] * len(rows)
    attributes = _column_values(table, "attributes", subset) if "attributes" in features else [None] * len(rows)
    if layout == "dataset" and "split" in features:
        if split_values is None:
            split_values = _column_values(table, "split", None)
        sample_splits = [split_values[i] for i in rows]
    else:
        sample_splits = [split if layout == "dict" else None] * len(rows)
    paths = _column_values(table, image_column, subset) if kind == "path" else None
    resolved = folder.resolve()

    samples = []
    for k, row in enumerate(rows):
        where = f"{label} row {row}"
        if kind == "path":
            image = _inside(root, paths[k], f"{where}, column {image_column!r}")
        else:
            image = resolved / f"{table_split}#{row}"
        ident = ids[k]
        sample_split = sample_splits[k]
        samples.append(Sample(id=str(ident) if ident is not None else str(row), image=image,
                              captions=_captions(captions[k], where, caption_column),
                              attributes=attributes[k] if isinstance(attributes[k], dict) else None,
                              split=sample_split if isinstance(sample_split, str) else None))
    return Dataset(source=folder, root=folder, kind="hf", samples=samples)


def is_reference(path: str | Path) -> bool:
    """Whether ``path`` is shaped like an image reference (``<folder>/<split>#<row>``) and is not a real file."""
    path = Path(path)
    return REFERENCE.match(path.name) is not None and not path.exists()


def open_reference(path: str | Path):
    """Open the image an image reference points at, as RGB (alpha over white).

    Parameters
    ----------
    path : str or Path
        ``<dataset folder>/<split>#<row>`` (a ``DatasetDict`` split) or ``<dataset folder>/#<row>`` (a plain
        ``Dataset``), as set on :class:`~mmconcepts.data.Sample` by :func:`read_hf`.

    Returns
    -------
    PIL.Image.Image or None
        The image, or ``None`` when ``path`` is not a reference (its name does not match or its parent is not a
        saved Hugging Face dataset), so the caller can treat it as a plain file.

    Raises
    ------
    ImageLoadError
        The split or row does not exist, the row has no image, or the image cannot be decoded.
    MMConceptsError
        ``datasets`` is not installed.
    """
    path = Path(path)
    match = REFERENCE.match(path.name)
    layout = hf_layout(path.parent) if match else None
    if layout is None:
        return None
    folder, split, row = path.parent, match["split"], int(match["row"])
    if layout == "dict":
        splits = _splits(folder)
        if split not in splits:
            raise ImageLoadError(f"image not found: {path} (no split {split!r} in {folder}; splits: "
                                 f"{', '.join(splits)})")
    elif split:
        raise ImageLoadError(f"image not found: {path} ({folder} is a plain Dataset; use {folder / f'#{row}'})")
    try:
        table = load_split(folder, split)
    except MMConceptsError as exc:
        if "pip install datasets" in str(exc):
            raise
        raise ImageLoadError(str(exc)) from None
    column = reference_column(table.features)
    if column is None:
        raise ImageLoadError(f"image not found: {path} (the dataset has no single image column)")
    if row >= len(table):
        raise ImageLoadError(f"image not found: {path} (row {row} out of range; the table has {len(table)} rows)")
    cell = _image_view(table, column)[row][column][0].as_py()
    data, file = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
    if data:
        return _open_rgb(io.BytesIO(data), path)
    if file:
        file = Path(file)
        return _open_rgb(file if file.is_absolute() else folder / file, path)
    raise ImageLoadError(f"image not found: {path} (row {row} has no image)")
