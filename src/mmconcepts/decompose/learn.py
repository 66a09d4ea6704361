"""Learn a concept dictionary from a feature store: ``mmconcepts learn`` in Python.

Writes into ``out`` (atomically: everything goes to a temp folder beside it, moved into place at the end):

- ``dictionary.safetensors`` + ``dictionary.json``: the fitted dictionary (:func:`load_dictionary`);
- ``activations.safetensors``: tensor ``"activations"``, ``N x K`` float32, rows in the store's order (or, as
  written by :func:`write_concepts` for large dictionaries, its sparse form: docs/FORMAT.md);
- ``summary.json``: method, layer, token, model, sizes, relative error, sparsity, iterations, seconds, ...
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from mmconcepts.decompose.settings import LearnSettings
from mmconcepts.errors import MMConceptsError
from mmconcepts.files import link_fields, write_json
from mmconcepts.outputs import FolderLock, OutputFolder, check_writable_target, os_error
from mmconcepts.params import settings_from

#: Above this many bytes of features, methods that can stream (``fit_shards``) read the store shard by shard.
STREAM_BYTES = 4 << 30


def _l1_methods() -> list[str]:
    from mmconcepts.decompose.registry import METHODS

    return [name for name, cls in METHODS.items() if "l1" in inspect.signature(cls.__init__).parameters]


def _build(settings: LearnSettings):
    """The (unfitted) dictionary of ``settings``, its parameters checked; the applied ``relative_l1`` stands
    in for ``l1`` until the features' scale is known."""
    method, device, relative_l1 = settings.method, settings.device, settings.relative_l1_applied
    from mmconcepts.decompose.registry import method_class

    cls = method_class(method)  # a registry name, or a user's class as "package.module:ClassName"
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = settings.parameters
    for flag, value in (("--l1", settings.l1), ("--relative-l1", relative_l1)):
        if value is not None:
            if "l1" not in accepted:
                raise MMConceptsError(f"{flag} does not apply to {method}; it applies to "
                                      f"{', '.join(_l1_methods())}")
            params["l1"] = value
    if "device" in accepted:
        params["device"] = device
    elif str(device) not in ("cpu", "auto"):
        raise MMConceptsError(f"{method} runs on the CPU only: use --device cpu")
    if "seed" in accepted:
        params["seed"] = settings.seed
    unknown = set(params) - accepted
    if unknown:
        raise MMConceptsError(f"{method} has no parameter {', '.join(sorted(unknown))}; its parameters: "
                              f"{', '.join(sorted(accepted))}")
    model = cls(settings.n_concepts, **params)
    try:
        model._check_params()
    except MMConceptsError as exc:
        if relative_l1 is not None and str(exc).startswith("l1 "):
            raise MMConceptsError(f"relative_l1={relative_l1!r} does not suit {method}: {exc}") from None
        raise
    return model


def _mean_norm(Z_or_shards, group=None) -> float:
    """Mean L2 norm of the feature rows (a tensor, or an iterable of shards read once; with a data-parallel
    ``group``, over every rank's rows)."""
    import torch

    if isinstance(Z_or_shards, torch.Tensor):
        return float(Z_or_shards.float().norm(dim=1).mean())
    sums = torch.zeros(2, dtype=torch.float64)
    for shard in Z_or_shards:
        sums += torch.tensor([float(shard.float().norm(dim=1).sum()), shard.shape[0]], dtype=torch.float64)
    if group is not None:
        group.sum_(sums)
    total, count = sums.tolist()
    if count == 0:
        raise MMConceptsError("the feature store has no samples: extract features first")
    return total / count


@dataclass(frozen=True)
class _Run:
    """One ``learn`` call once its arguments are read: where from and to, the store's record and the
    resolved layer and word, the settings, and what happens around the fit."""

    features: Path
    out: Path
    manifest: dict
    layer: str
    token: str | None
    settings: LearnSettings
    overwrite: bool
    finish: Callable[[Path], None] | None


def learn(features: str | os.PathLike, layer: str | int | None = None, *, out: str | os.PathLike | None = None,
          settings: LearnSettings | None = None, overwrite: bool = False,
          finish: Callable[[Path], None] | None = None,
          **fields: Any) -> Path:
    """Fit a concept dictionary on one layer of a feature store and write it to ``out``.

    Parameters
    ----------
    features : path
        Feature store folder (``mmconcepts extract``).
    layer : str, int or None
        The layer (:attr:`LearnSettings.layer <mmconcepts.decompose.settings.LearnSettings>`), given here
        rather than in ``settings``.
    out : path
        Output folder; must not exist or be empty, unless ``overwrite``.
    settings : :class:`~mmconcepts.decompose.settings.LearnSettings`, or its fields as keywords
        (``method="pca"``, ``n_concepts=20``, ``relative_l1=``, ``seed=``, ``stream=``, ``token=``,
        ``device=``, ...); any other keyword is a parameter of the method (``k=8``), as
        ``method_parameters``.
    overwrite : bool
        Replace a non-empty ``out``.
    finish : callable or None
        Called with the new folder, complete but not yet swapped in (``mmconcepts learn`` grounds it there:
        ``lambda folder: ground(folder, ...)``): whatever it writes is swapped in with the dictionary, and an
        error it raises leaves ``out`` as it was. Learning itself never imports a later stage.

    Returns
    -------
    Path of ``out``.

    Examples
    --------
    >>> from mmconcepts.concepts import load_concepts
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> from mmconcepts.extract import extract
    >>> _ = write_dataset("shapes/train", n=64, seed=0)
    >>> _ = extract("shapes/train", "circle", out="runs/circle", layers=["norm"], mode="teacher", progress=False)
    >>> learn("runs/circle", layer="norm", out="runs/concepts", n_concepts=4, seed=0)
    PosixPath('runs/concepts')
    >>> concepts = load_concepts("runs/concepts")
    >>> concepts.summary["method"], concepts.directions.shape, concepts.activations.shape
    ('semi-nmf', torch.Size([4, 192]), torch.Size([23, 4]))
    >>> learn("runs/circle", layer="norm", out="runs/pca", method="pca", n_concepts=4).name
    'pca'
    >>> load_concepts("runs/pca").n_concepts       # PCA reads each component on both sides
    8
    """
    from mmconcepts.extract.store import read_manifest, store_token, stored_layer

    settings = _settings(settings, layer, fields)
    if out is None:
        raise MMConceptsError("no output folder given: pass --out DIR")
    features, out = Path(features), Path(out)
    manifest = read_manifest(features)
    run = _Run(features, out, manifest, stored_layer(manifest, settings.layer),
               store_token(manifest, settings.token, features), settings, overwrite, finish)
    model = _build(settings)
    check_writable_target(out, overwrite, inputs=[features])
    from contextlib import nullcontext

    # one writer per folder, from the start (under torchrun rank 0 writes; the lock is reentrant for the swap)
    with FolderLock(out) if int(os.environ.get("RANK", "0") or 0) == 0 else nullcontext():
        return _fit_and_write(run, model)


def _settings(settings: LearnSettings | None, layer, fields: dict) -> LearnSettings:
    """``settings``, or those of ``layer`` and the keywords (a keyword no setting names is the method's)."""
    names = {f.name for f in dataclass_fields(LearnSettings)}
    given = {k: v for k, v in fields.items() if k in names} | ({"layer": layer} if layer is not None else {})
    extra = {k: v for k, v in fields.items() if k not in names}
    if extra:
        given["method_parameters"] = {**given.get("method_parameters", {}), **extra}
    return settings_from(LearnSettings, settings, given, "learn")


def _fit_and_write(run: _Run, model) -> Path:
    """The body of :func:`learn` once its arguments are checked and ``out`` is locked."""
    from mmconcepts.decompose.distributed import collective

    group = collective()  # under torchrun: each rank reads its own rows, the statistics are all-reduced
    use_stream, part = _plan(run, model, group)
    with _data_parallel(model, group if part is not None else None):
        V, seconds = _fit(run, model, use_stream, part, group)
    if part is not None:
        V = group.gather_rows(V)  # every rank's activations, in store order, on rank 0
        if group.rank != 0:
            group.barrier()  # rank 0 writes the folder
            return run.out
    try:
        _write(run, model, V, _summary(run, model, V, seconds, use_stream, group.world))
    finally:
        if part is not None:
            group.barrier()
    return run.out


def _plan(run: _Run, model, group) -> tuple[bool, object]:
    """Whether to stream, and this rank's rows (``None``: every row, one process)."""
    method, n_concepts, stream = run.settings.method, run.settings.n_concepts, run.settings.stream
    streams = hasattr(model, "fit_transform_shards")
    size = int(run.manifest.get("n_samples") or 0) * int(run.manifest.get("hidden_size") or 0) * 4
    if stream and not streams:
        raise MMConceptsError(f"{method} cannot stream: it needs all features in memory (drop --stream)")
    use_stream = streams and (stream if stream is not None else size > STREAM_BYTES)
    if group.world == 1:
        return use_stream, None
    if not streams:
        raise MMConceptsError(f"{method} cannot learn data-parallel: under torchrun use semi-nmf or nmf")
    from mmconcepts.decompose.distributed import my_rows, row_range
    from mmconcepts.extract.features import count_feature_rows

    n_rows = count_feature_rows(run.features, run.layer, run.token)  # the same on every rank: all raise or none
    if n_rows == 0:
        raise MMConceptsError(f"the feature store {run.features} has no samples: extract features first")
    seed_rows = row_range(n_rows, 0, group.world)[1]  # rank 0 seeds the concepts on its rows [0, seed_rows)
    if seed_rows < n_concepts:  # refused on every rank alike, before any collective
        from mmconcepts.decompose.validation import check_n_concepts

        check_n_concepts(n_concepts, n_rows)
        raise MMConceptsError(f"{n_rows} rows on {group.world} ranks leave rank 0 {seed_rows}, fewer than the "
                              f"{n_concepts} concepts: use at most {n_rows // n_concepts} "
                              f"rank{'s' * (n_rows // n_concepts > 1)}")
    return True, my_rows(n_rows, group)  # a contiguous range of rows: any store, any ranks


@contextmanager
def _data_parallel(model, group):
    """The fit of ``model`` all-reduced over ``group`` (``None``: one process), and the collective gone from
    the model afterwards, whatever happened: it is not part of the fitted dictionary."""
    if group is None:
        yield
        return
    model._group = group  # read by the block-coordinate solver (decompose/_solver.py)
    try:
        yield
    finally:
        del model._group


def _fit(run: _Run, model, use_stream: bool, part, group):
    """Fit ``model`` (the applied ``relative_l1`` scaled by the features' mean norm first); the training
    activations (``N x K`` float32 on the CPU, this rank's rows) and the seconds the fit took."""
    import torch

    from mmconcepts.extract.features import iter_feature_shards, load_features

    def shards():
        return iter_feature_shards(run.features, run.layer, run.token, rows=part)

    start = time.perf_counter()
    Z = None if use_stream else load_features(run.features, run.layer, run.token)[0]
    if Z is not None and Z.shape[0] == 0:
        raise MMConceptsError(f"the feature store {run.features} has no samples: extract features first")
    relative_l1 = run.settings.relative_l1_applied
    if relative_l1 is not None:  # the same setting means the same sparsity at every layer and model
        scale = _mean_norm(Z if Z is not None else shards(), group if part is not None else None)
        if math.isfinite(scale):  # else the fit refuses the non-finite features, naming them
            model.set_params(l1=float(relative_l1) * scale)
            model._check_params()
    if use_stream:
        V = model.fit_transform_shards(shards)
    else:
        V = model.fit_transform(Z)
        del Z
    seconds = time.perf_counter() - start
    return V.detach().to("cpu", torch.float32).contiguous(), seconds


def _summary(run: _Run, model, V, seconds: float, use_stream: bool, ranks: int) -> dict:
    """What ``summary.json`` records of the fit (docs/FORMAT.md)."""
    from mmconcepts.decompose.base import code_stats

    stats = code_stats(V)
    return {
        "method": run.settings.method,
        "layer": run.layer,
        "token": run.token,
        "model": run.manifest.get("model"),
        "n_samples": int(V.shape[0]),
        "n_concepts": int(V.shape[1]),
        "hidden_size": int(model.n_features_in_),
        "relative_error": float(model.reconstruction_err_),
        "sparsity": stats["sparsity"],
        "exact_zeros": stats["exact_zeros"],
        "active_per_sample": stats["active_per_sample"],
        "nonnegative_activations": bool(model.nonnegative_activations),
        "n_iter": int(model.n_iter_),
        "seconds": round(seconds, 3),
        "streamed": bool(use_stream),
        "ranks": ranks,
        "device": str(run.settings.device),
        "seed": run.settings.seed,
        "params": model.get_params(),
        "relative_l1": run.settings.relative_l1_applied,
        "pool": run.settings.pool,
        **link_fields("features", run.features, run.out),  # written in a temp folder beside out: the same links
    }


def _write(run: _Run, model, V, summary: dict) -> None:
    """The dictionary, the activations and the summary into ``out`` (one swap), ``finish`` run first."""
    write_concepts(run.out, model, V, summary, inputs=[run.features], overwrite=run.overwrite, finish=run.finish)


def write_concepts(out: str | os.PathLike, dictionary, activations, summary: dict, *, inputs=(),
                   overwrite: bool = False, finish: Callable[[Path], None] | None = None) -> Path:
    """Write a concepts folder (docs/FORMAT.md) in one swap: ``dictionary`` (fitted; saved with the provenance
    of ``summary``), ``activations`` (an ``N x K`` tensor, or the tensors of ``activations.safetensors`` as a
    dict: the sparse form) and ``summary.json``; ``finish(tmp)`` runs on the complete folder before the swap
    (``mmconcepts learn`` and ``import-sae`` ground there). ``inputs``: folders ``out`` must not touch.

    Returns
    -------
    Path of ``out``.
    """
    from safetensors.torch import save_file

    out = Path(out)
    tensors = activations if isinstance(activations, dict) else {"activations": activations}
    with OutputFolder(out, overwrite=overwrite, inputs=list(inputs)) as tmp:
        try:
            from mmconcepts.decompose.persistence import provenance

            dictionary.save(tmp, provenance=provenance(summary))
            save_file(tensors, str(tmp / "activations.safetensors"))
        except OSError as exc:
            raise os_error(exc, f"cannot write the dictionary into {out}") from None
        write_json(tmp / "summary.json", summary, indent=2)
        if finish is not None:
            finish(tmp)
    return out
