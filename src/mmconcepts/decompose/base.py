"""Shared base of the concept dictionaries: input checks, the scikit-learn shape, saving and loading.

A concept dictionary factorises features ``Z`` (``N x D``) as ``Z ~ V U``: ``U`` (``components_``,
``K x D``) holds one concept a row, ``V`` (``N x K``) the activations of each sample. Every method
lives in its own module and registers itself in :data:`METHODS` under its command-line name.

A fitted dictionary is saved as a folder with two files, written atomically (temp file + ``os.replace``):

- ``dictionary.safetensors``: the fitted tensors (``components_`` and what the method needs besides);
- ``dictionary.json``: ``{"format", "method", "params", "attributes", "tensors", "sha256"}``, where
  ``attributes`` are the fitted scalars (``n_iter_``, ``reconstruction_err_``, ...) and ``sha256`` the
  digest of the tensor file, so a truncated or edited file is refused on load.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from mmconcepts.errors import MMConceptsError

#: Method name (as ``mmconcepts learn --method`` spells it) -> class. Filled by the subclasses.
METHODS: dict[str, type[ConceptDictionary]] = {}

FORMAT = "mmconcepts.dictionary"
FORMAT_VERSION = 1
JSON_NAME = "dictionary.json"
TENSORS_NAME = "dictionary.safetensors"


# ----------------------------------------------------------------------------------------- validation
def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when present else CPU; any other name is checked to exist on this machine."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MMConceptsError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MMConceptsError(f"device {device!r} asked for but CUDA is not available here: use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MMConceptsError(f"device {device!r} does not exist ({torch.cuda.device_count()} GPU(s) here)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise MMConceptsError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto")
    return dev


def check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MMConceptsError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_float(name: str, value: Any, low: float = 0.0, *, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        op = ">" if strict else ">="
        raise MMConceptsError(f"{name} must be a finite number {op} {low}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise MMConceptsError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def as_tensor(X: Any, name: str = "Z", *, n_features: int | None = None, device: torch.device | None = None,
              nonnegative: bool = False) -> torch.Tensor:
    """``X`` as a finite, non-empty, 2-D float32 tensor on ``device``, or a one-line MMConceptsError."""
    if isinstance(X, torch.Tensor):
        T = X.detach()
    else:
        try:
            T = torch.as_tensor(X)
        except (TypeError, ValueError, RuntimeError):
            raise MMConceptsError(f"{name} must be a 2-D numeric matrix (samples x features), got "
                                  f"{type(X).__name__}") from None
    if T.is_complex() or T.dtype == torch.bool:
        raise MMConceptsError(f"{name} must hold real numbers, got dtype {T.dtype}")
    if T.ndim != 2:
        raise MMConceptsError(f"{name} must be a 2-D matrix (samples x features), got shape {tuple(T.shape)}")
    if T.shape[0] == 0 or T.shape[1] == 0:
        raise MMConceptsError(f"{name} is empty (shape {tuple(T.shape)}): check the feature store and layer")
    if n_features is not None and T.shape[1] != n_features:
        raise MMConceptsError(f"{name} has {T.shape[1]} columns but the dictionary expects {n_features}: use "
                              "features from the same model and layer as the dictionary")
    T = T.to(device=device if device is not None else T.device, dtype=torch.float32)
    # one fast reduction: a NaN or inf anywhere makes the sum non-finite (an overflowing sum falls through
    # to the exact element-wise check)
    if not bool(torch.isfinite(T.sum(dtype=torch.float32))) and not bool(torch.isfinite(T).all()):
        finite = torch.isfinite(T)
        n_nan = int(torch.isnan(T).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise MMConceptsError(f"{name} contains {n_nan} NaN and {n_inf} infinite values: drop those samples "
                              "or extract the features again")
    if nonnegative and float(T.amin()) < 0:
        raise MMConceptsError(f"{name} has negative entries but this method needs non-negative features: "
                              "use semi-nmf instead")
    return T


def check_n_concepts(n_concepts: int, n_samples: int) -> None:
    if n_concepts > n_samples:
        raise MMConceptsError(f"{n_concepts} concepts asked for but only {n_samples} samples: use at most "
                              f"{n_samples} concepts or extract more samples")


# ------------------------------------------------------------------------------------------- metrics
def relative_error(Z: torch.Tensor, Z_hat: torch.Tensor) -> float:
    """``||Z - Z_hat||_F / ||Z||_F`` accumulated in float64."""
    num = (Z - Z_hat).double().square().sum()
    den = Z.double().square().sum().clamp_min(1e-300)
    return float((num / den).sqrt())


def code_stats(V: torch.Tensor) -> dict[str, float]:
    """Sparsity of activations: ``exact_zeros`` (fraction == 0), ``sparsity`` (fraction <= 1% of the sample's
    largest activation), ``active_per_sample`` (mean count above 10% of the sample's largest activation)."""
    V = V.detach().float()
    top = V.abs().amax(dim=1, keepdim=True)
    return {
        "exact_zeros": float((V == 0).float().mean()),
        "sparsity": float((V.abs() <= 0.01 * top).float().mean()),
        "active_per_sample": float((V.abs() > 0.1 * top).float().sum(1).mean()),
    }


# ---------------------------------------------------------------------------------------------- I/O
def _write_bytes_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _corrupt(path: Path, why: str) -> MMConceptsError:
    return MMConceptsError(f"corrupt dictionary at {path} ({why}): learn it again with `mmconcepts learn`")


def load_dictionary(path: str | os.PathLike, device: str = "cpu") -> ConceptDictionary:
    """Load a dictionary saved by :meth:`ConceptDictionary.save`, whatever its method.

    ``device`` replaces the device it was fitted on (default CPU, so a GPU-fitted dictionary loads anywhere).
    """
    importlib.import_module("mmconcepts.decompose")  # registers every method
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    path = Path(path)
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
    cls = METHODS.get(info.get("method"))
    if cls is None:
        raise _corrupt(path, f"unknown method {info.get('method')!r}")
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
    params = info.get("params")
    if not isinstance(params, dict):
        raise _corrupt(path, "params missing")
    if "device" in params:
        params = {**params, "device": device}
    try:
        model = cls(**params)
    except TypeError:
        raise _corrupt(path, "params do not fit the method") from None
    attributes = info.get("attributes", {})
    if not isinstance(attributes, dict) or set(attributes) != set(cls._fitted_scalars):
        raise _corrupt(path, "fitted attributes missing")
    for name, value in attributes.items():
        setattr(model, name, value)
    for name, t in tensors.items():
        setattr(model, name, t)
    try:
        model._check_loaded()
    except MMConceptsError as exc:
        raise _corrupt(path, str(exc)) from None
    return model


# --------------------------------------------------------------------------------------------- base
class ConceptDictionary:
    """Base of every concept dictionary (``Z ~ V U``), in the scikit-learn shape.

    Subclasses set ``method`` (their registry name), implement ``fit`` and ``transform``, and list their
    fitted tensors in ``_fitted_tensors`` and fitted scalars in ``_fitted_scalars`` so that ``save`` and
    :func:`load_dictionary` round-trip them. Inputs may be torch tensors or NumPy arrays; outputs are float32
    torch tensors on the input's device (CPU for NumPy input). Fitted tensors are kept on the CPU.

    Examples
    --------
    >>> import torch
    >>> from mmconcepts.decompose import SemiNMF, load_dictionary
    >>> model = SemiNMF(n_concepts=3).fit(torch.rand(50, 3) @ torch.randn(3, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     loaded = load_dictionary(model.save(tmp))
    >>> torch.equal(loaded.components_, model.components_)
    True
    """

    method: ClassVar[str] = ""
    #: Whether ``transform`` promises activations >= 0.
    nonnegative_activations: ClassVar[bool] = True
    #: Whether the concepts are points of the feature space (centroids, samples) rather than directions
    #: added to it; the text grounding decodes a point as it is and a direction on top of the mean feature.
    concepts_are_points: ClassVar[bool] = False
    _fitted_tensors: ClassVar[tuple[str, ...]] = ("components_",)
    _fitted_scalars: ClassVar[tuple[str, ...]] = ("n_features_in_", "n_iter_", "reconstruction_err_")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("method"):
            METHODS[cls.method] = cls

    # -- parameters
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given (JSON-serialisable)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @property
    def n_concepts_(self) -> int:
        self._check_fitted()
        return int(self.components_.shape[0])

    @property
    def _device(self) -> torch.device:
        return resolve_device(getattr(self, "device", "cpu"))

    def _check_fitted(self) -> None:
        if getattr(self, "components_", None) is None:
            raise MMConceptsError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _check_loaded(self) -> None:
        """Consistency of loaded attributes; subclasses extend it."""
        U = self.components_
        if U.ndim != 2 or U.shape[1] != self.n_features_in_:
            raise MMConceptsError("components_ does not match n_features_in_")

    def _input(self, X: Any, name: str = "Z", **kw) -> tuple[torch.Tensor, torch.device]:
        """Checked input on the compute device, and the device the result goes back to."""
        out = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
        if getattr(self, "components_", None) is not None and "n_features" not in kw:
            kw["n_features"] = self.n_features_in_
        return as_tensor(X, name, device=self._device, **kw), out

    # -- the scikit-learn shape
    def fit(self, Z: Any) -> ConceptDictionary:
        raise NotImplementedError

    def transform(self, Z: Any) -> torch.Tensor:
        raise NotImplementedError

    def fit_transform(self, Z: Any) -> torch.Tensor:
        """Fit on ``Z`` and return its activations (``N x K``)."""
        return self.fit(Z).transform(Z)

    def inverse_transform(self, V: Any) -> torch.Tensor:
        """Features rebuilt from activations: ``V @ components_`` (``N x D``)."""
        self._check_fitted()
        V, out = self._input(V, "activations", n_features=self.n_concepts_)
        return (V @ self.components_.to(V.device)).to(out)

    def reconstruction_error(self, Z: Any) -> float:
        """Relative error ``||Z - inverse_transform(transform(Z))|| / ||Z||`` on new samples."""
        Z, _ = self._input(Z)
        return relative_error(Z, self.inverse_transform(self.transform(Z)).to(Z.device))

    # -- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``dictionary.safetensors`` and ``dictionary.json`` into the folder ``path`` (created if needed).

        Each file is written to a temp name and moved into place, so a crash leaves no half-written file.
        """
        from safetensors.torch import save as save_safetensors

        self._check_fitted()
        path = Path(path)
        tensors = {name: getattr(self, name).detach().to("cpu").contiguous() for name in self._fitted_tensors}
        raw = save_safetensors(tensors)
        from mmconcepts import __version__

        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "params": self.get_params(),
            "attributes": {name: getattr(self, name) for name in self._fitted_scalars},
            "tensors": {name: list(t.shape) for name, t in tensors.items()},
            "sha256": hashlib.sha256(raw).hexdigest(),
            "mmconcepts_version": __version__,
        }
        text = json.dumps(info, indent=2)
        try:
            path.mkdir(parents=True, exist_ok=True)
            _write_bytes_atomic(path / TENSORS_NAME, raw)
            _write_bytes_atomic(path / JSON_NAME, text.encode("utf-8"))
        except OSError as exc:
            raise MMConceptsError(f"cannot write the dictionary to {path}: {exc.strerror}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> ConceptDictionary:
        """Load a saved dictionary; refuses one saved by another method than ``cls``."""
        model = load_dictionary(path, device=device)
        if cls is not ConceptDictionary and not isinstance(model, cls):
            raise MMConceptsError(f"dictionary at {path} was learnt with {model.method!r}, not {cls.method!r}: "
                                  "use load_dictionary to load any method")
        return model
