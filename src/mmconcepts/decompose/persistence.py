"""Saving and loading concept dictionaries.

A fitted dictionary is saved as a folder with two files, each written atomically
(:func:`mmconcepts.files.atomic_write_bytes`):

- ``dictionary.safetensors``: the fitted tensors (``components_`` and what the method needs besides), and
  the online state of methods that stream (running statistics, optimiser moments, random generator), so a
  loaded dictionary's ``partial_fit`` continues exactly as the saved one's would have;
- ``dictionary.json``: ``{"format", "format_version", "method", "params", "attributes", "state", "tensors",
  "sha256"}``, where ``attributes`` are the fitted scalars (``n_iter_``, ``reconstruction_err_``, ...),
  ``state`` the online state's scalars and ``sha256`` the digest of the tensor file, so a truncated or
  edited file is refused on load. A dictionary whose state has names only the fitted object knows (a
  user's estimator wrapped by :mod:`~mmconcepts.decompose.custom`) adds ``"extra": {"tensors": [names],
  "values": {...}}``, its tensors stored as ``extra.<name>``.

A custom method (``"method": "package.module:Class"``) is imported on load. Files written before the online state was saved load too (``state`` absent: ``partial_fit`` then starts
fresh statistics from the saved concepts).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mmconcepts.decompose.registry import METHODS, is_method_spec, method_class
from mmconcepts.decompose.validation import resolve_device
from mmconcepts.errors import MMConceptsError
from mmconcepts.files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from mmconcepts.decompose.base import ConceptDictionary

FORMAT = "mmconcepts.dictionary"
#: Prefix of the extra tensors (:meth:`ConceptDictionary._extra_state`) in the tensor file, so that a wrapped
#: estimator's ``components_`` never meets the dictionary's own.
EXTRA_PREFIX = "extra."
FORMAT_VERSION = 1
JSON_NAME = "dictionary.json"
TENSORS_NAME = "dictionary.safetensors"


def _corrupt(path: Path, why: str) -> MMConceptsError:
    return MMConceptsError(f"corrupt dictionary at {path} ({why}): learn it again with `mmconcepts learn`")


def save_dictionary(model: ConceptDictionary, path: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Write ``dictionary.safetensors`` and ``dictionary.json`` for the fitted ``model`` into ``path``.

    Parameters
    ----------
    model : ConceptDictionary
        A fitted dictionary (else :class:`sklearn.exceptions.NotFittedError`).
    path : path
        Folder, created if needed. Each file is written to a temp name and moved into place, so a crash
        leaves no half-written file.

    provenance : dict or None
        Where the dictionary was learnt (``{"layer": "norm", "token": "dog", ...}``, string values), written
        into the safetensors header's metadata, where :func:`read_provenance` finds it: a ``summary.json``
        edited or swapped with another folder's is then caught (:mod:`mmconcepts.records`).

    Returns
    -------
    Path
        ``path``.
    """
    from safetensors.torch import save as save_safetensors

    from mmconcepts import __version__

    model._check_fitted()
    path = Path(path)
    names = list(model._fitted_tensors) + [n for n in model._state_tensors if hasattr(model, n)]
    tensors = {name: getattr(model, name).detach().to("cpu").contiguous() for name in names}
    extra_tensors, extra_values = model._extra_state()
    tensors.update({f"{EXTRA_PREFIX}{name}": t.detach().to("cpu").contiguous() for name, t in extra_tensors.items()})
    # one metadata key holding sorted JSON: safetensors writes a header's keys in hash order, not bit-stable
    raw = save_safetensors(tensors, metadata={PROVENANCE_KEY: json.dumps(
        {str(k): str(v) for k, v in provenance.items()}, sort_keys=True)} if provenance else None)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": model.method,
        "params": model.get_params(deep=False),
        "attributes": {name: getattr(model, name) for name in model._fitted_scalars},
        "state": {name: getattr(model, name) for name in model._state_scalars if hasattr(model, name)},
        "tensors": {name: list(t.shape) for name, t in tensors.items()},
        "sha256": hashlib.sha256(raw).hexdigest(),
        "mmconcepts_version": __version__,
    }
    if extra_tensors or extra_values:  # only dictionaries that have such state (custom methods) write it
        info["extra"] = {"tensors": sorted(extra_tensors), "values": extra_values}
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MMConceptsError(f"cannot write the dictionary to {path}: {exc.strerror}") from None
    atomic_write_bytes(path / TENSORS_NAME, raw)
    atomic_write_text(path / JSON_NAME, json.dumps(info, indent=2))
    return path


#: The safetensors header's metadata key of a dictionary's provenance.
PROVENANCE_KEY = "mmconcepts.provenance"

#: The ``summary.json`` entries a dictionary also carries in its own file (:func:`provenance`).
PROVENANCE = ("layer", "token", "method", "n_samples", "n_concepts", "hidden_size")


def provenance(summary: dict) -> dict[str, str]:
    """What a dictionary's safetensors header records of where it was learnt (:data:`PROVENANCE` of its
    ``summary.json``), checked against ``summary.json`` on every read
    (:func:`mmconcepts.concepts.concept_set.check_concepts_folder`)."""
    return {key: str(summary[key]) for key in PROVENANCE}


def read_provenance(path: str | os.PathLike) -> dict[str, str]:
    """The provenance :func:`save_dictionary` wrote into the header of ``path/dictionary.safetensors`` (``{}``
    for a dictionary saved without one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(path) / TENSORS_NAME), framework="pt") as f:
            recorded = json.loads((f.metadata() or {}).get(PROVENANCE_KEY, "{}"))
    except Exception:  # a missing or corrupt file: load_dictionary names it
        return {}
    return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checked JSON description and tensors of the dictionary folder ``path``."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    jpath, tpath = path / JSON_NAME, path / TENSORS_NAME
    if not jpath.is_file() or not tpath.is_file():
        raise MMConceptsError(f"no dictionary at {path} (expected {JSON_NAME} and {TENSORS_NAME}); "
                              "create one with `mmconcepts learn`")
    try:
        info = json.loads(jpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _corrupt(path, f"{JSON_NAME} is not valid JSON") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise _corrupt(path, f"{JSON_NAME} is not a dictionary description")
    if info.get("format_version") != FORMAT_VERSION:
        raise MMConceptsError(f"dictionary at {path} has format version {info.get('format_version')!r}; this "
                              f"mmconcepts reads version {FORMAT_VERSION}: learn it again")
    raw = tpath.read_bytes()
    if hashlib.sha256(raw).hexdigest() != info.get("sha256"):
        raise _corrupt(path, f"{TENSORS_NAME} does not match its checksum")
    try:
        tensors = load_safetensors(raw)
    except (SafetensorError, ValueError, RuntimeError):
        raise _corrupt(path, f"{TENSORS_NAME} is unreadable") from None
    shapes = info.get("tensors")
    if not isinstance(shapes, dict) or set(shapes) != set(tensors):
        raise _corrupt(path, "the tensors do not match the description")
    for name, t in tensors.items():
        if list(t.shape) != shapes[name]:
            raise _corrupt(path, f"{name} has shape {list(t.shape)}, expected {shapes[name]}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _corrupt(path, f"{name} holds NaN or infinite values")
    return info, tensors


def load_dictionary(path: str | os.PathLike, device: str = "cpu") -> ConceptDictionary:
    """Load a dictionary saved by :meth:`ConceptDictionary.save`, whatever its method.

    Parameters
    ----------
    path : path
        The folder written by ``save``.
    device : str
        Replaces the device it was fitted on (default CPU, so a GPU-fitted dictionary loads anywhere).

    Returns
    -------
    ConceptDictionary
        Fitted, with its online state when one was saved (``partial_fit`` continues from it).

    Examples
    --------
    >>> import tempfile, torch
    >>> from mmconcepts.decompose import SemiNMF
    >>> model = SemiNMF(n_concepts=3).fit(torch.rand(50, 3) @ torch.randn(3, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     loaded = load_dictionary(model.save(tmp))
    >>> torch.equal(loaded.components_, model.components_)
    True
    """
    resolve_device(device)
    path = Path(path)
    info, tensors = _read(path)
    method = info.get("method")
    if not (method in METHODS or is_method_spec(method)):  # a spec names a user's class: method_class imports it
        raise _corrupt(path, f"unknown method {method!r}")
    cls = method_class(method)
    params = info.get("params")
    if not isinstance(params, dict):
        raise _corrupt(path, "params missing")
    if "device" in params:
        params = {**params, "device": device}
    try:
        model = cls(**params)
    except TypeError:
        raise _corrupt(path, "params do not fit the method") from None
    try:
        model._check_params()
    except MMConceptsError as exc:
        raise _corrupt(path, str(exc)) from None
    attributes = info.get("attributes", {})
    defaults = cls._scalar_defaults  # scalars a file written before they existed may lack
    if not isinstance(attributes, dict) or set(attributes) - set(cls._fitted_scalars) or \
            set(cls._fitted_scalars) - set(attributes) - set(defaults):
        raise _corrupt(path, "fitted attributes missing")
    attributes = {**{n: defaults[n] for n in cls._fitted_scalars if n not in attributes}, **attributes}
    state = info.get("state", {})
    if not isinstance(state, dict) or not set(state) <= set(cls._state_scalars):
        raise _corrupt(path, "unknown online state")
    extra = info.get("extra", {"tensors": [], "values": {}})
    if not isinstance(extra, dict) or not isinstance(extra.get("tensors"), list) or \
            not isinstance(extra.get("values"), dict):
        raise _corrupt(path, "malformed extra state")
    extra_tensors = {}
    for name in extra["tensors"]:
        if f"{EXTRA_PREFIX}{name}" not in tensors:
            raise _corrupt(path, f"extra tensor {name!r} missing")
        extra_tensors[name] = tensors.pop(f"{EXTRA_PREFIX}{name}")
    if set(tensors) - set(cls._state_tensors) != set(cls._fitted_tensors):
        raise _corrupt(path, "the tensors do not match the method")
    for name, value in {**attributes, **state}.items():
        setattr(model, name, value)
    for name, t in tensors.items():
        setattr(model, name, t)
    try:
        model._load_extra_state(extra_tensors, extra["values"])
        model._check_loaded()
    except MMConceptsError as exc:
        raise _corrupt(path, str(exc)) from None
    return model
