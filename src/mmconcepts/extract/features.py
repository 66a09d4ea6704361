"""Reading a feature store: its features (all at once or shard by shard), metadata rows and captions, for one
word of a store of several. The layout is described in :mod:`mmconcepts.extract.store`.

Examples
--------
>>> from mmconcepts.extract import load_features              # doctest: +SKIP
>>> Z, meta = load_features("runs/circle", layer="norm")       # doctest: +SKIP
>>> Z.shape, meta[0]["caption"]                                # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.store import (_read_jsonl, _shard_name, data_root, read_manifest, store_token, store_tokens,
                                      stored_layer)
from mmconcepts.files import resolve


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
    return frozenset(i for i, row in enumerate(_read_jsonl(Path(file))) if row.get("token") == token)


def _shard_rows(file: Path) -> int:
    """Rows of a shard file, from its header alone."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return int(f.get_slice("features").get_shape()[0])


def iter_feature_shards(path: str | os.PathLike, layer: str | int, token: str | None = None,
                        shards: range | None = None) -> Iterator:
    """Yield the features of one layer shard by shard, as float32 tensors (for data larger than memory); of a
    store of several words, only the rows of ``token``; ``shards``: only these shard indices (a rank's part
    of a data-parallel fit)."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("complete", False):
        raise MMConceptsError(f"the extraction into {path} did not finish; rerun it with --resume")
    name = stored_layer(manifest, layer)
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
    rows = _read_jsonl(path / "metadata.jsonl")
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
    return _read_jsonl(file) if file.exists() else []


def load_features(path: str | os.PathLike, layer: str | int, token: str | None = None):
    """Load one layer of a store: the ``N x D`` float32 matrix and the per-sample metadata.

    ``layer`` is a stored layer name (``"norm"``, ``"31"``) or a negative index into the model's layers;
    ``token`` picks one word's rows of a store of several (required there).
    """
    import torch

    shards = list(iter_feature_shards(path, layer, token))
    meta = load_metadata(path, token)
    Z = torch.cat(shards) if shards else torch.empty(0, read_manifest(path)["hidden_size"])
    if Z.shape[0] != len(meta):
        raise MMConceptsError(f"feature store {path} is inconsistent ({Z.shape[0]} rows, {len(meta)} metadata "
                              "lines); extract the features again")
    return Z, meta
