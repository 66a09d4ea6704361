"""The feature store: hidden states of the token of interest, as safetensors shards on disk.

Layout of a store folder::

    manifest.json                          model, layers, token, mode, dtype, hidden size, counts, version
    metadata.jsonl                         one JSON object per kept sample, in order
    captions.jsonl                         generate mode: every scanned image's caption, kept or not
    progress.json                          what is committed (shards, samples, dataset position); for --resume
    shards/<layer>/shard-00000.safetensors tensor "features", n x D, in the storage dtype

A shard is committed in three steps, each atomic (temp file + ``os.replace``): the tensor files of every
layer, the metadata lines, then ``progress.json``. A crash at any point leaves a store that ``resume``
rolls back to the last committed shard, so a resumed run has no duplicate and no missing sample. Memory
stays flat: at most one shard of features is held before it goes to disk. No pickles anywhere.

The readers (:func:`~mmconcepts.extract.features.load_features`, ``iter_feature_shards``, ``load_metadata``,
``load_captions``) are in :mod:`mmconcepts.extract.features`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import atomic_write_bytes, atomic_write_text, resolve_field, write_json
from mmconcepts.outputs import make_dirs, new_temp_dir, swap_in
from mmconcepts.records import STORE_DTYPES, changed_setting

#: The storage dtypes of the features.
DTYPES = tuple(STORE_DTYPES)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a store, or a one-line error saying what is wrong with the folder."""
    path = Path(path)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise MMConceptsError(f"no feature store at {path} (manifest.json missing); create one with `mmconcepts "
                              "extract`")
    from mmconcepts.records import Manifest

    return Manifest.read(path).to_json()  # every entry a reader relies on checked (docs/FORMAT.md)


def data_root(path: str | os.PathLike, manifest: dict | None = None) -> Path:
    """The folder the image paths of a store's metadata are relative to (its dataset's root)."""
    manifest = read_manifest(path) if manifest is None else manifest
    data = manifest.get("data")
    if isinstance(data, dict) and data.get("root"):
        return resolve_field(data, "root", path)
    return Path(path)  # stores of format 1 keep absolute image paths


def stored_layer(manifest: dict, layer: str | int | None = None) -> str:
    """The stored name of ``layer`` in a store: a stored name (``"31"``, ``"norm"``, ``"vision.3"``) or a negative
    index into the model's layers (``"-1"``) or its vision encoder's (``"vision.-1"``); ``None`` when the store
    holds one layer. Anything else is a one-line error listing the
    stored layers (an index is never wrapped around)."""
    layers = [str(x) for x in manifest.get("layers", [])]
    if layer is None:
        if len(layers) == 1:
            return layers[0]
        raise MMConceptsError(f"this feature store holds several layers ({', '.join(layers)}): choose one with "
                              "--layer")
    name = str(layer).strip()
    if name in layers:
        return name
    n = manifest.get("num_layers")
    if name.startswith("-") and name[1:].isdigit() and n and -n <= int(name) < 0 and str(int(name) + n) in layers:
        return str(int(name) + n)
    index, nv = name[len("vision."):], manifest.get("num_vision_layers")
    if name.startswith("vision.-") and index[1:].isdigit() and nv and -nv <= int(index) < 0 \
            and f"vision.{int(index) + nv}" in layers:
        return f"vision.{int(index) + nv}"
    raise MMConceptsError(f"layer {name!r} is not in this feature store; stored layers: {', '.join(layers)}")


def layer_width(manifest: dict, name: str) -> int:
    """The width of a stored layer's rows: the manifest's ``widths`` entry for an image-side layer of another
    width (a vision layer), else ``hidden_size``."""
    return int((manifest.get("widths") or {}).get(str(name), manifest["hidden_size"]))


def _committed(path: Path) -> dict:
    progress = path / "progress.json"
    empty = {"shards": 0, "pending": 0, "n_samples": 0, "n_captions": 0, "position": 0, "counts": {}}
    if not progress.is_file():
        return empty
    from mmconcepts.records import Progress

    return {**empty, **Progress.read(path).to_json()}


def _truncate_lines(path: Path, n: int) -> None:
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    atomic_write_text(path, "".join(lines[:n]))


def _append_lines(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def store_tokens(manifest: dict) -> dict[str, list[str]]:
    """The words of interest of a store and their ``also`` variants, in order: ``{"dog": ["dogs"]}``."""
    if manifest.get("tokens"):
        also = manifest.get("also") or {}
        return {t: list(also.get(t, [])) if isinstance(also, dict) else [] for t in manifest["tokens"]}
    return {manifest.get("token"): list(manifest.get("also") or [])}


def store_token(manifest: dict, token: str | None = None, path=None) -> str:
    """The word a reader asked for, checked against the store (``None``: its only word)."""
    words = list(store_tokens(manifest))
    where = f"the feature store {path}" if path else "the feature store"
    if token is None:
        if len(words) == 1:
            return words[0]
        raise MMConceptsError(f"{where} holds the tokens {', '.join(words)}: choose one with --token")
    if token not in words:
        raise MMConceptsError(f"token {token!r} is not in {where}; it holds {', '.join(words)}")
    return token


def read_metadata_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a store's ``metadata.jsonl`` as written, each checked by
    :class:`~mmconcepts.records.MetadataRow` (a one-line error naming the line of a bad row)."""
    from mmconcepts.records import MetadataRow, read_jsonl

    return read_jsonl(Path(path) / MetadataRow.FILE, MetadataRow)


#: Manifest entries that are outcomes or places, not settings: a resumed run may differ in them.
NOT_SETTINGS = frozenset({"format_version", "complete", "n_samples", "n_shards", "counts", "mmconcepts_version",
                          "commit_every", "model_options.device", "data.source", "data.source_absolute",
                          "data.root", "data.root_absolute", "num_vision_layers"})


class FeatureStoreWriter:
    """Stream features to a store, committing progress atomically at batch boundaries.

    Parameters
    ----------
    path : the store folder.
    manifest : the run record (model, token, mode, every setting); ``layers``, ``dtype`` and ``hidden_size``
        are required. ``resume`` refuses a store whose manifest differs in any setting (see
        :data:`NOT_SETTINGS` for what may differ).
    shard_size : samples per shard; a shard is closed once this many are buffered (at a batch boundary).
    commit_every : progress (dataset position, counts, captions and the samples of the open shard) is
        committed at least every this many scanned images, so a crash loses at most that much scanning.
    resume : continue a store whose run was interrupted; ``overwrite`` replaces an existing store: the new
        store is written beside it (``.<name>.tmp-*``) and swapped in by :meth:`close`, so a run that fails
        or is killed leaves the old store as it was.

    Notes
    -----
    A commit writes, each step atomic: the open shard's tensor files (``shard-<n>.safetensors``, every layer,
    rewritten as the shard grows), the new metadata and caption lines, then ``progress.json``, which says how
    many shards are closed and how many rows of the open shard count. On resume anything past
    ``progress.json`` is rolled back and the open shard's committed rows are buffered again, so the finished
    store is the one an uninterrupted run writes, shard for shard.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict, shard_size: int = 1024, resume: bool = False,
                 overwrite: bool = False, commit_every: int = 256):
        if manifest.get("dtype") not in DTYPES:
            raise MMConceptsError(f"unknown storage dtype {manifest.get('dtype')!r}: choose {', '.join(DTYPES)}")
        for name, value in (("shard_size", shard_size), ("commit_every", commit_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MMConceptsError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        self.path = Path(path)
        self.shard_size = shard_size
        self.commit_every = commit_every
        self.layers = list(manifest["layers"])
        self.created = False
        if self.path.exists() and not self.path.is_dir():
            raise MMConceptsError(f"--out {self.path} exists and is not a folder: choose another --out")
        exists = self.path.exists() and any(self.path.iterdir())
        self.target = None  # the store to replace, when this one is written beside it
        if exists and overwrite:
            self.target, self.path = self.path, new_temp_dir(self.path)
            exists = False
        if exists and not resume:
            raise MMConceptsError(f"output folder {self.path} is not empty: pass --resume to continue it or "
                                  "--overwrite to replace it")
        self.manifest = {**manifest, "complete": False}
        self._features: dict[str, list] = {layer: [] for layer in self.layers}
        self._meta: list[dict] = []
        self._captions: list[dict] = []
        self._meta_written = 0  # rows of the open shard already in metadata.jsonl
        if exists:
            old = read_manifest(self.path)
            change = changed_setting(old, self.manifest, NOT_SETTINGS)
            if change:
                key, was, now = change
                raise MMConceptsError(f"cannot resume {self.path}: it was made with {key}={was!r}, not {now!r}; "
                                      "use a new --out or --overwrite")
            self._rollback()
        else:
            self.created = not self.path.exists() or self.target is not None
            for layer in self.layers:
                make_dirs(self.path / "shards" / layer)
            atomic_write_text(self.path / "metadata.jsonl", "")
            atomic_write_text(self.path / "captions.jsonl", "")
        write_json(self.path / "manifest.json", self.manifest)
        state = _committed(self.path)
        self.n_shards = state["shards"]
        self.n_samples = state["n_samples"]  # committed rows, those of the open shard included
        self.n_captions = state["n_captions"]
        self.position = state["position"]
        self.counts = dict(state.get("counts", {}))

    def _rollback(self) -> None:
        """Drop whatever an interrupted run wrote after its last commit; buffer the open shard's rows again."""
        from safetensors.torch import load_file

        state = _committed(self.path)
        closed, pending = state["shards"], state["pending"]
        for layer in self.layers:
            folder = self.path / "shards" / layer
            folder.mkdir(parents=True, exist_ok=True)
            for file in folder.iterdir():
                stem = file.name.split(".")[0]
                index = int(stem.split("-")[1]) if stem.startswith("shard-") and stem[6:].isdigit() else None
                keep = index is not None and file.name.endswith(".safetensors") and (
                    index < closed or (index == closed and pending))
                if not keep:
                    file.unlink()
            if pending:  # the open shard may hold rows written after the commit: keep the committed ones
                self._features[layer] = [load_file(folder / _shard_name(closed))["features"][:pending].float()]
        _truncate_lines(self.path / "metadata.jsonl", state["n_samples"])
        _truncate_lines(self.path / "captions.jsonl", state["n_captions"])
        if pending:
            self._meta = read_metadata_rows(self.path)[state["n_samples"] - pending:]
            self._meta_written = pending

    @property
    def buffered(self) -> int:
        return len(self._meta)

    def add(self, features: dict, meta: list[dict]) -> None:
        """Buffer a batch: ``features[layer]`` is an ``n x D`` tensor, ``meta`` its n metadata rows."""
        for layer in self.layers:
            if features[layer].shape[0] != len(meta):
                raise ValueError("features and metadata differ in length")
            self._features[layer].append(features[layer].detach().to("cpu"))
        self._meta.extend(meta)

    def add_captions(self, rows: list[dict]) -> None:
        """Buffer the generated captions of a batch (every scanned image, kept or not)."""
        self._captions.extend(rows)

    def commit(self, position: int, counts: dict, force: bool = False) -> None:
        """Record that the dataset is scanned up to ``position`` with the running ``counts``; call at batch
        boundaries. Writes when the open shard is full, when ``commit_every`` images were scanned since the
        last commit, or when ``force``."""
        import torch
        from safetensors.torch import save

        full = self.buffered >= self.shard_size
        if not (full or force or position - self.position >= self.commit_every):
            return
        if self.buffered:
            dtype = getattr(torch, self.manifest["dtype"])
            for layer in self.layers:
                rows = torch.cat(self._features[layer]) if len(self._features[layer]) > 1 else \
                    self._features[layer][0]
                self._features[layer] = [rows]
                atomic_write_bytes(self.path / "shards" / layer / _shard_name(self.n_shards),
                                   save({"features": rows.to(dtype).contiguous()}))
            _append_lines(self.path / "metadata.jsonl", self._meta[self._meta_written:])
            self.n_samples += self.buffered - self._meta_written
            self._meta_written = self.buffered
        pending = self.buffered
        if full:
            self.n_shards += 1
            pending = 0
            self._features = {layer: [] for layer in self.layers}
            self._meta, self._meta_written = [], 0
        if self._captions:
            _append_lines(self.path / "captions.jsonl", self._captions)
            self.n_captions += len(self._captions)
            self._captions = []
        self.position = position
        self.counts = dict(counts)
        write_json(self.path / "progress.json", {"shards": self.n_shards, "pending": pending,
                                                 "n_samples": self.n_samples, "n_captions": self.n_captions,
                                                 "position": position, "counts": self.counts})

    def close(self, position: int, counts: dict, **extra) -> dict:
        """Commit what is left, close the last shard and mark the store complete; returns the final manifest."""
        self.commit(position, counts, force=True)
        if self.buffered:  # the open shard is the last one
            self.n_shards += 1
            self._features = {layer: [] for layer in self.layers}
            self._meta, self._meta_written = [], 0
            write_json(self.path / "progress.json", {"shards": self.n_shards, "pending": 0,
                                                     "n_samples": self.n_samples, "n_captions": self.n_captions,
                                                     "position": position, "counts": self.counts})
        self.manifest.update(extra, complete=True, n_samples=self.n_samples, n_shards=self.n_shards,
                             counts=self.counts)
        write_json(self.path / "manifest.json", self.manifest)
        if self.target is not None:  # the new store is complete: swap it in for the old one
            swap_in(self.path, self.target)
            self.path, self.target = self.target, None
        return self.manifest

    @property
    def staged(self) -> bool:
        """Whether this store is written beside the one it replaces (swapped in by :meth:`close`)."""
        return self.target is not None

    def discard(self) -> None:
        """Remove the store this writer made (a run that ends with nothing to keep); a store it was to replace
        stays as it was."""
        shutil.rmtree(self.path, ignore_errors=True)
