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

Examples
--------
>>> from mmconcepts.extract.store import load_features       # doctest: +SKIP
>>> Z, meta = load_features("runs/circle", layer="norm")       # doctest: +SKIP
>>> Z.shape, meta[0]["caption"]                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mmconcepts.errors import MMConceptsError

DTYPES = ("float16", "bfloat16", "float32")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a store, or a one-line error saying what is wrong with the folder."""
    path = Path(path)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise MMConceptsError(f"no feature store at {path} (manifest.json missing); create one with `mmconcepts "
                              "extract`")
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MMConceptsError(f"{manifest} is corrupt; extract the features again") from None
    if not isinstance(data, dict) or "layers" not in data:
        raise MMConceptsError(f"{manifest} is not a feature-store manifest; extract the features again")
    return data


def _resolve_layer(manifest: dict, layer: str | int) -> str:
    name = str(layer)
    if name in manifest["layers"]:
        return name
    if name.lstrip("-").isdigit() and manifest.get("num_layers"):
        n = manifest["num_layers"]
        index = int(name)
        if -n <= index < 0 and str(index + n) in manifest["layers"]:
            return str(index + n)
    raise MMConceptsError(f"layer {name!r} is not in this feature store; stored layers: "
                          f"{', '.join(manifest['layers'])}")


def _committed(path: Path) -> dict:
    progress = path / "progress.json"
    if not progress.is_file():
        return {"shards": 0, "n_samples": 0, "n_captions": 0, "position": 0, "counts": {}}
    return {"n_captions": 0, **json.loads(progress.read_text())}


def _truncate_lines(path: Path, n: int) -> None:
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines[:n]))
    os.replace(tmp, path)


def _append_lines(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def iter_feature_shards(path: str | os.PathLike, layer: str | int) -> Iterator:
    """Yield the features of one layer shard by shard, as float32 tensors (for data larger than memory)."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("complete", False):
        raise MMConceptsError(f"the extraction into {path} did not finish; rerun it with --resume")
    name = _resolve_layer(manifest, layer)
    for i in range(manifest["n_shards"]):
        file = path / "shards" / name / _shard_name(i)
        try:
            yield load_file(file)["features"].float()
        except Exception as exc:  # safetensors raises its own error types for truncated files
            raise MMConceptsError(f"cannot read {file} ({type(exc).__name__}); extract the features again") \
                from None


def _read_jsonl(file: Path) -> list[dict]:
    rows = []
    with open(file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def load_metadata(path: str | os.PathLike) -> list[dict]:
    """The per-sample metadata rows of a store."""
    return _read_jsonl(Path(path) / "metadata.jsonl")


def load_captions(path: str | os.PathLike) -> list[dict]:
    """Every scanned image's generated caption (generate mode): ``{"index", "id", "caption", "kept"}`` rows."""
    file = Path(path) / "captions.jsonl"
    return _read_jsonl(file) if file.exists() else []


def load_features(path: str | os.PathLike, layer: str | int):
    """Load one layer of a store: the ``N x D`` float32 matrix and the per-sample metadata.

    ``layer`` is a stored layer name (``"norm"``, ``"31"``) or a negative index into the model's layers.
    """
    import torch

    shards = list(iter_feature_shards(path, layer))
    meta = load_metadata(path)
    Z = torch.cat(shards) if shards else torch.empty(0, read_manifest(path)["hidden_size"])
    if Z.shape[0] != len(meta):
        raise MMConceptsError(f"feature store {path} is inconsistent ({Z.shape[0]} rows, {len(meta)} metadata "
                              "lines); extract the features again")
    return Z, meta


class FeatureStoreWriter:
    """Stream features to a store, one atomic shard at a time.

    Parameters
    ----------
    path : the store folder.
    manifest : what to record about the run (model, token, mode, ...); ``layers``, ``dtype`` and
        ``hidden_size`` are required.
    shard_size : samples per shard; a shard is written once this many are buffered (at a batch boundary).
    resume : continue a store whose run was interrupted; ``overwrite`` replaces an existing store.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict, shard_size: int = 1024, resume: bool = False,
                 overwrite: bool = False):
        if manifest.get("dtype") not in DTYPES:
            raise MMConceptsError(f"unknown storage dtype {manifest.get('dtype')!r}: choose {', '.join(DTYPES)}")
        self.path = Path(path)
        self.shard_size = shard_size
        self.layers = list(manifest["layers"])
        self.created = False
        exists = self.path.exists() and any(self.path.iterdir())
        if exists and overwrite:
            shutil.rmtree(self.path)
            exists = False
        if exists and not resume:
            raise MMConceptsError(f"output folder {self.path} is not empty: pass --resume to continue it or "
                                  "--overwrite to replace it")
        if exists:
            old = read_manifest(self.path)
            for key in ("model", "token", "mode", "layers", "dtype", "data"):
                if old.get(key) != manifest.get(key):
                    raise MMConceptsError(f"cannot resume {self.path}: it was made with {key}={old.get(key)!r}, "
                                          f"not {manifest.get(key)!r}; use a new --out or --overwrite")
            self._rollback()
        else:
            self.created = not self.path.exists()
            try:
                for layer in self.layers:
                    (self.path / "shards" / layer).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MMConceptsError(f"cannot write to {self.path}: {exc.strerror}") from None
            (self.path / "metadata.jsonl").write_text("")
            (self.path / "captions.jsonl").write_text("")
        self.manifest = {**manifest, "complete": False}
        _write_json(self.path / "manifest.json", self.manifest)
        state = _committed(self.path)
        self.n_shards = state["shards"]
        self.n_samples = state["n_samples"]
        self.n_captions = state["n_captions"]
        self.position = state["position"]
        self.counts = dict(state.get("counts", {}))
        self._features: dict[str, list] = {layer: [] for layer in self.layers}
        self._meta: list[dict] = []
        self._captions: list[dict] = []

    def _rollback(self) -> None:
        """Drop whatever an interrupted run wrote after its last committed shard."""
        state = _committed(self.path)
        for layer in self.layers:
            folder = self.path / "shards" / layer
            folder.mkdir(parents=True, exist_ok=True)
            for file in folder.iterdir():
                stem = file.name.split(".")[0]
                index = int(stem.split("-")[1]) if stem.startswith("shard-") and stem[6:].isdigit() else None
                if index is None or index >= state["shards"] or not file.name.endswith(".safetensors"):
                    file.unlink()
        _truncate_lines(self.path / "metadata.jsonl", state["n_samples"])
        _truncate_lines(self.path / "captions.jsonl", state["n_captions"])

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
        """Write the buffer as a shard if it is full (or ``force``), and record the dataset ``position``
        reached and the running ``counts``. Call at batch boundaries only."""
        import torch
        from safetensors.torch import save_file

        if self.buffered < self.shard_size and not force:
            return
        if self.buffered:
            dtype = getattr(torch, self.manifest["dtype"])
            for layer in self.layers:
                tensor = torch.cat(self._features[layer]).to(dtype).contiguous()
                file = self.path / "shards" / layer / _shard_name(self.n_shards)
                tmp = file.with_name(file.name + ".tmp")
                save_file({"features": tensor}, str(tmp))
                os.replace(tmp, file)
            _append_lines(self.path / "metadata.jsonl", self._meta)
            self.n_shards += 1
            self.n_samples += self.buffered
            self._features = {layer: [] for layer in self.layers}
            self._meta = []
        if self._captions:
            _append_lines(self.path / "captions.jsonl", self._captions)
            self.n_captions += len(self._captions)
            self._captions = []
        self.position = position
        self.counts = dict(counts)
        _write_json(self.path / "progress.json", {"shards": self.n_shards, "n_samples": self.n_samples,
                                                  "n_captions": self.n_captions, "position": position,
                                                  "counts": self.counts})

    def close(self, position: int, counts: dict, **extra) -> dict:
        """Commit what is left and mark the store complete; returns the final manifest."""
        self.commit(position, counts, force=True)
        self.manifest.update(extra, complete=True, n_samples=self.n_samples, n_shards=self.n_shards,
                             counts=self.counts)
        _write_json(self.path / "manifest.json", self.manifest)
        return self.manifest

    def discard(self) -> None:
        """Remove the store (used when a run ends with nothing to keep)."""
        shutil.rmtree(self.path, ignore_errors=True)
