"""Reading a feature store: its features (all at once or shard by shard), metadata rows and captions, for one
word of a store of several. The layout is described in :mod:`mmconcepts.extract.store`; :func:`load_features`
shows a store read back.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.store import (_shard_name, data_root, layer_width, read_manifest, read_metadata_rows,
                                      store_token, store_tokens, stored_layer)
from mmconcepts.files import resolve
from mmconcepts.records import read_jsonl


def _rows_of(path: Path, manifest: dict, token: str | None) -> frozenset | None:
    """``None`` when every row is read, else the indices of the rows of ``token`` (a store of several words)."""
    token = store_token(manifest, token, path)
    if len(store_tokens(manifest)) == 1:
        return None
    file = path / "metadata.jsonl"
    return _token_rows(str(file.resolve()), file.stat().st_mtime_ns, token)


@functools.lru_cache(maxsize=16)
def _token_rows(file: str, mtime_ns: int, token: str) -> frozenset:
    """The rows of one word, read once per metadata file version (a streaming fit reads the shards once a
    pass; the metadata need not be read again each time)."""
    return frozenset(i for i, row in enumerate(read_metadata_rows(Path(file).parent)) if row.get("token") == token)


@functools.lru_cache(maxsize=16)
def _token_order(file: str, mtime_ns: int, token: str) -> tuple[int, ...]:
    """The rows of one word in store order (position ``p`` among them is store row ``order[p]``)."""
    return tuple(sorted(_token_rows(file, mtime_ns, token)))


def _shard_rows(file: Path) -> int:
    """Rows of a shard file, from its header alone."""
    try:
        return _shard_rows_cached(str(file.resolve()), file.stat().st_mtime_ns)
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise MMConceptsError(f"cannot read {file} ({type(exc).__name__}); extract the features again") from None


@functools.lru_cache(maxsize=4096)
def _shard_rows_cached(file: str, mtime_ns: int) -> int:
    """:func:`_shard_rows`, read once per shard file version (a streaming fit reads the store once a pass)."""
    from safetensors import safe_open

    with safe_open(file, framework="pt") as f:
        return int(f.get_slice("features").get_shape()[0])


def _checked_store(path: Path, layer: str | int) -> tuple[dict, str]:
    """The manifest and stored layer name of a finished store whose shards of that layer agree with the
    manifest: storage dtype, width, and rows adding up to ``n_samples`` (headers only, read once per file
    version)."""
    manifest = read_manifest(path)
    if not manifest.get("complete", False):
        raise MMConceptsError(f"the extraction into {path} did not finish; rerun it with --resume")
    name = stored_layer(manifest, layer)
    folder = path / "shards" / name
    total = 0
    for i in range(manifest["n_shards"]):
        file = folder / _shard_name(i)
        if not file.is_file():
            raise MMConceptsError(f"{file} is missing; extract the features again")
        total += _checked_shard(str(file.resolve()), file.stat().st_mtime_ns, manifest["dtype"],
                                layer_width(manifest, name))
    if total != manifest["n_samples"]:
        raise MMConceptsError(f"the shards of layer {name} in {path} hold {total} rows, the manifest says "
                              f"{manifest['n_samples']}; extract the features again")
    return manifest, name


@functools.lru_cache(maxsize=4096)
def _checked_shard(file: str, mtime_ns: int, dtype: str, hidden_size: int) -> int:
    """:func:`mmconcepts.records.check_shard` once per shard file version."""
    from mmconcepts.records import check_shard

    return check_shard(file, {"dtype": dtype, "hidden_size": hidden_size})


def _token_positions(path: Path, manifest: dict, token: str | None) -> tuple[int, ...] | None:
    """``None`` when every row is read, else the store rows of ``token`` in order."""
    token = store_token(manifest, token, path)
    if len(store_tokens(manifest)) == 1:
        return None
    file = path / "metadata.jsonl"
    return _token_order(str(file.resolve()), file.stat().st_mtime_ns, token)


def count_feature_rows(path: str | os.PathLike, layer: str | int, token: str | None = None) -> int:
    """The number of rows :func:`iter_feature_shards` yields for ``layer`` (and ``token``), from the shards'
    headers (and the metadata, in a store of several words): the ``rows=`` positions run over ``range`` of
    it."""
    path = Path(path)
    manifest, name = _checked_store(path, layer)
    order = _token_positions(path, manifest, token)
    if order is not None:
        return len(order)
    return sum(_shard_rows(path / "shards" / name / _shard_name(i)) for i in range(manifest["n_shards"]))


def _read_rows(file: Path, start: int, stop: int):
    """Rows ``[start, stop)`` of a shard file, read alone (not the whole shard), as float32."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return f.get_slice("features")[start:stop].float()
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise MMConceptsError(f"cannot read {file} ({type(exc).__name__}); extract the features again") \
            from None


def _iter_row_range(path: Path, manifest: dict, name: str, token: str | None, rows: tuple[int, int]) -> Iterator:
    """:func:`iter_feature_shards` over positions ``[start, stop)`` of the layer's (token's) rows: only the
    shards that overlap them are opened, and of each only the part holding them is read."""
    import bisect

    import torch

    start, stop = (int(r) for r in rows)
    order = _token_positions(path, manifest, token)
    folder = path / "shards" / name
    sizes = (_shard_rows(folder / _shard_name(i)) for i in range(manifest["n_shards"]))
    n_rows = len(order) if order is not None else None
    if not 0 <= start <= stop or (n_rows is not None and stop > n_rows):
        raise MMConceptsError(f"rows {start}:{stop} are outside the {n_rows} rows of {path}"
                              if n_rows is not None else f"rows {start}:{stop} are not a range of rows")
    if start == stop:
        return
    # store rows wanted: [lo, hi) of every row, or the token's rows order[start:stop]
    lo, hi = (start, stop) if order is None else (order[start], order[stop - 1] + 1)
    offset = 0
    for i, size in enumerate(sizes):
        first, offset = offset, offset + size
        if offset <= lo:
            continue
        if first >= hi:
            return
        a, b = max(lo, first), min(hi, offset)
        if order is None:
            yield _read_rows(folder / _shard_name(i), a - first, b - first)
            continue
        p, q = bisect.bisect_left(order, a, start, stop), bisect.bisect_left(order, b, start, stop)
        if p == q:
            continue
        a, b = order[p], order[q - 1] + 1
        shard = _read_rows(folder / _shard_name(i), a - first, b - first)
        if b - a != q - p:  # other words' rows lie between this word's: keep this word's
            shard = shard[torch.tensor(order[p:q], dtype=torch.long) - a]
        yield shard
    if order is None and offset < hi:
        raise MMConceptsError(f"rows {start}:{stop} are outside the {offset} rows of {path}")


def iter_feature_shards(path: str | os.PathLike, layer: str | int, token: str | None = None,
                        shards: range | None = None, rows: tuple[int, int] | None = None) -> Iterator:
    """Yield the features of one layer shard by shard, as float32 tensors (for data larger than memory); of a
    store of several words, only the rows of ``token``; ``shards``: only these shard indices; ``rows``: only
    positions ``[start, stop)`` among those rows, in store order (a rank's part of a data-parallel fit,
    :func:`~mmconcepts.decompose.distributed.my_rows`): only the shards overlapping them are read, each
    only in the part that holds them, and a shard holding none yields nothing. See :func:`count_feature_rows`."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    manifest, name = _checked_store(path, layer)
    if rows is not None:
        if shards is not None:
            raise MMConceptsError("give shards or rows, not both")
        yield from _iter_row_range(path, manifest, name, token, rows)
        return
    wanted = _rows_of(path, manifest, token)
    indices = range(manifest["n_shards"]) if shards is None else shards
    start = 0
    if wanted is not None and len(indices):  # the row offset of the first shard read
        start = sum(_shard_rows(path / "shards" / name / _shard_name(i)) for i in range(indices[0]))
    for i in indices:
        file = path / "shards" / name / _shard_name(i)
        try:
            shard = load_file(file)["features"].float()
        except Exception as exc:  # safetensors raises its own error types for truncated files
            raise MMConceptsError(f"cannot read {file} ({type(exc).__name__}); extract the features again") \
                from None
        if wanted is not None:
            keep = [j for j in range(shard.shape[0]) if start + j in wanted]
            start += shard.shape[0]
            shard = shard[torch.tensor(keep, dtype=torch.long)]
        yield shard


def load_metadata(path: str | os.PathLike, token: str | None = None) -> list[dict]:
    """The per-sample metadata rows of a store (of ``token``, in a store of several words), with ``"image"``
    as a path on this machine (the store keeps it relative to its dataset's root, see :func:`data_root`)."""
    path = Path(path)
    manifest = read_manifest(path)
    rows = read_metadata_rows(path)
    if len(store_tokens(manifest)) > 1:
        token = store_token(manifest, token, path)
        rows = [row for row in rows if row.get("token") == token]
    elif token is not None:
        store_token(manifest, token, path)
    root = data_root(path, manifest)
    for row in rows:
        if isinstance(row.get("image"), str):
            row["image"] = str(resolve(row["image"], root))
    return rows


def load_captions(path: str | os.PathLike) -> list[dict]:
    """Every scanned image's generated caption (generate mode): ``{"index", "id", "caption", "kept", "tokens"}``
    rows (``tokens``: the words kept from it)."""
    file = Path(path) / "captions.jsonl"
    return read_jsonl(file) if file.exists() else []


def load_features(path: str | os.PathLike, layer: str | int, token: str | None = None):
    """Load one layer of a store: the ``N x D`` float32 matrix and the per-sample metadata.

    ``layer`` is a stored layer name (``"norm"``, ``"31"``) or a negative index into the model's layers;
    ``token`` picks one word's rows of a store of several (required there).

    Examples
    --------
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> from mmconcepts.extract import extract
    >>> _ = write_dataset("shapes/train", n=8, seed=0)
    >>> _ = extract("shapes/train", "circle,square", out="runs/shapes", layers=["norm"], mode="teacher",
    ...             progress=False)
    >>> Z, meta = load_features("runs/shapes", layer="norm", token="square")
    >>> Z.shape, Z.dtype
    (torch.Size([4, 192]), torch.float32)
    >>> meta[0]["word"], meta[0]["caption"]
    ('square', 'a triangle at the top in blue of little size , a triangle of small size in orange on the ...')
    >>> load_features("runs/shapes", layer="norm")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: the feature store runs/shapes holds the tokens circle, square: choose ...
    """
    import torch

    shards = list(iter_feature_shards(path, layer, token))
    meta = load_metadata(path, token)
    if shards:
        Z = torch.cat(shards)
    else:
        manifest = read_manifest(path)
        Z = torch.empty(0, layer_width(manifest, stored_layer(manifest, layer)))
    if Z.shape[0] != len(meta):
        raise MMConceptsError(f"feature store {path} is inconsistent ({Z.shape[0]} rows, {len(meta)} metadata "
                              "lines); extract the features again")
    return Z, meta


def mean_feature(store, layer, token: str | None = None):
    """The mean feature of one layer of a store (of one word's rows), read shard by shard (float64 sums)."""
    total, count = 0.0, 0
    for shard in iter_feature_shards(store, layer, token):
        total, count = total + shard.double().sum(dim=0), count + shard.shape[0]
    return (total / max(count, 1)).float()
