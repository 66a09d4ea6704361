"""Learn a concept dictionary from a feature store: ``mmconcepts learn`` in Python.

Writes into ``out`` (atomically: everything goes to a temp folder beside it, moved into place at the end):

- ``dictionary.safetensors`` + ``dictionary.json``: the fitted dictionary (:func:`load_dictionary`);
- ``activations.safetensors``: tensor ``"activations"``, ``N x K`` float32, rows in the store's order;
- ``summary.json``: method, layer, token, model, sizes, relative error, sparsity, iterations, seconds, ...
"""

from __future__ import annotations

import inspect
import math
import os
import time
from pathlib import Path
from typing import Any

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import link_fields, write_json
from mmconcepts.outputs import FolderLock, OutputFolder, check_writable_target, os_error

#: Above this many bytes of features, methods that can stream (``fit_shards``) read the store shard by shard.
STREAM_BYTES = 4 << 30


def _l1_methods() -> list[str]:
    from mmconcepts.decompose.base import METHODS

    return [name for name, cls in METHODS.items() if "l1" in inspect.signature(cls.__init__).parameters]


def _build(method: str, n_concepts: int, l1: float | None, relative_l1: float | None, device: str, seed: int,
           kwargs: dict):
    """The (unfitted) dictionary, its parameters checked; ``relative_l1`` stands in for ``l1`` until the
    features' scale is known."""
    from mmconcepts.decompose.custom import resolve_method

    cls = resolve_method(method)  # a registry name, or a user's class as "package.module:ClassName"
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = dict(kwargs)
    for flag, value in (("--l1", l1), ("--relative-l1", relative_l1)):
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
        params["seed"] = seed
    unknown = set(params) - accepted
    if unknown:
        raise MMConceptsError(f"{method} has no parameter {', '.join(sorted(unknown))}; its parameters: "
                              f"{', '.join(sorted(accepted))}")
    model = cls(n_concepts, **params)
    try:
        model._check_params()
    except MMConceptsError as exc:
        if relative_l1 is not None and str(exc).startswith("l1 "):
            raise MMConceptsError(f"relative_l1={relative_l1!r} does not suit {method}: {exc}") from None
        raise
    return model


#: Default sparsity of the methods that have one, as a share of the features' mean norm (see ``learn``).
#: Semi-NMF with a small L1 term is the paper's objective (its code: DictionaryLearning, positive codes);
#: on ShapesWorld it makes each sample use a few concepts, and those concepts read as true words (README).
DEFAULT_RELATIVE_L1 = {"semi-nmf": 0.05}


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


def learn(features: str | os.PathLike, layer: str | int | None, method: str = "semi-nmf", n_concepts: int = 20,
          out: str | os.PathLike | None = None, *, l1: float | None = None, relative_l1: float | None = None,
          device: str = "cpu", seed: int = 0, overwrite: bool = False, stream: bool | None = None,
          token: str | None = None, grounding=None, grounding_model=None, **method_kwargs: Any) -> Path:
    """Fit a concept dictionary on one layer of a feature store and write it to ``out``.

    Parameters
    ----------
    features : path
        Feature store folder (``mmconcepts extract``).
    layer : str, int or None
        Stored layer name (``"31"``, ``"norm"``) or a negative index; None if the store holds one layer.
    method : str
        A key of :data:`~mmconcepts.decompose.METHODS` (``"semi-nmf"``, ``"nmf"``, ``"pca"``, ...), or a class
        of your own as ``"package.module:ClassName"`` (:mod:`~mmconcepts.decompose.custom`).
    n_concepts : int
        Number of concepts ``K``.
    out : path
        Output folder; must not exist or be empty, unless ``overwrite``.
    l1 : float or None
        L1 weight for methods that have one, in the features' units (None: see ``relative_l1``).
    relative_l1 : float or None
        L1 weight as a share of the features' mean norm, ``l1 = relative_l1 * mean ||z||``, so that one
        setting means the same sparsity at every layer and model; for every method with an ``l1``
        parameter (semi-nmf, nmf, reference-dl; the others refuse it), and the ``l1`` used is what the
        summary's ``params`` record. None: :data:`DEFAULT_RELATIVE_L1` for semi-nmf when ``l1`` is not
        given either, the method's default otherwise.
    device, seed : str, int
        Compute device; seed (the same seed gives the same concepts, bit for bit on the CPU).
    token : str or None
        The word whose rows to learn from, in a store of several words (required there); ``None``: the
        store's only word.
    stream : bool or None
        Read the store shard by shard (methods with ``fit_shards``); None: when the features exceed 4 GiB.
    grounding : :class:`~mmconcepts.concepts.settings.GroundingSettings` or None
        Ground the concepts (``grounding.json``) before the folder is swapped in, with ``grounding_model`` (as
        :func:`~mmconcepts.concepts.ground` takes it): a grounding that fails leaves ``out`` as it was.
    **method_kwargs
        Further parameters of the method (``max_iter=...``, ``tol=...``, ``k=...``).

    Returns
    -------
    Path of ``out``.

    Examples
    --------
    >>> learn("runs/dog", layer="norm", out="runs/dog/semi-nmf")   # doctest: +SKIP
    PosixPath('runs/dog/semi-nmf')
    """
    from mmconcepts.extract.store import read_manifest, store_token, stored_layer

    if out is None:
        raise MMConceptsError("no output folder given: pass --out DIR")
    features, out = Path(features), Path(out)
    manifest = read_manifest(features)
    layer_name = stored_layer(manifest, layer)
    token = store_token(manifest, token, features)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MMConceptsError(f"seed must be an integer >= 0, got {seed!r}")
    if l1 is not None and relative_l1 is not None:
        raise MMConceptsError("give --l1 or --relative-l1, not both")
    if relative_l1 is None and l1 is None and method in DEFAULT_RELATIVE_L1:
        relative_l1 = DEFAULT_RELATIVE_L1[method]
    if relative_l1 is not None:
        if isinstance(relative_l1, bool) or not isinstance(relative_l1, (int, float)) or not 0 <= relative_l1 < 1:
            raise MMConceptsError(f"relative_l1 must be a number in [0, 1), got {relative_l1!r}")
    model = _build(method, n_concepts, l1, relative_l1, device, seed, method_kwargs)
    check_writable_target(out, overwrite, inputs=[features])
    from contextlib import nullcontext

    # one writer per folder, from the start (under torchrun rank 0 writes; the lock is reentrant for the swap)
    with FolderLock(out) if int(os.environ.get("RANK", "0") or 0) == 0 else nullcontext():
        return _fit_and_write(model, features, out, manifest, layer_name, token, method, n_concepts, relative_l1,
                              device, seed, overwrite, stream, grounding, grounding_model)


def _fit_and_write(model, features, out, manifest, layer_name, token, method, n_concepts, relative_l1, device, seed,
                   overwrite, stream, grounding, grounding_model) -> Path:
    """The body of :func:`learn` once its arguments are checked and ``out`` is locked."""
    from mmconcepts.decompose.base import code_stats
    from mmconcepts.extract.features import iter_feature_shards, load_features

    streams = hasattr(model, "fit_transform_shards")
    size = int(manifest.get("n_samples") or 0) * int(manifest.get("hidden_size") or 0) * 4
    if stream and not streams:
        raise MMConceptsError(f"{method} cannot stream: it needs all features in memory (drop --stream)")
    use_stream = streams and (stream if stream is not None else size > STREAM_BYTES)
    from mmconcepts.decompose.distributed import collective, my_rows, row_range

    group = collective()  # under torchrun: each rank reads its own rows, the statistics are all-reduced
    part = None
    if group.world > 1:
        if not streams:
            raise MMConceptsError(f"{method} cannot learn data-parallel: under torchrun use semi-nmf or nmf")
        from mmconcepts.extract.features import count_feature_rows

        n_rows = count_feature_rows(features, layer_name, token)  # the same on every rank: all raise or none
        if n_rows == 0:
            raise MMConceptsError(f"the feature store {features} has no samples: extract features first")
        seed_rows = row_range(n_rows, 0, group.world)[1]  # rank 0 seeds the concepts on its rows [0, seed_rows)
        if seed_rows < n_concepts:  # refused on every rank alike, before any collective
            from mmconcepts.decompose.validation import check_n_concepts

            check_n_concepts(n_concepts, n_rows)
            raise MMConceptsError(f"{n_rows} rows on {group.world} ranks leave rank 0 {seed_rows}, fewer than the "
                                  f"{n_concepts} concepts: use at most {n_rows // n_concepts} "
                                  f"rank{'s' * (n_rows // n_concepts > 1)}")
        use_stream, part = True, my_rows(n_rows, group)  # a contiguous range of rows: any store, any ranks
        model._group = group

    def shards():
        return iter_feature_shards(features, layer_name, token, rows=part)

    import torch
    from safetensors.torch import save_file

    start = time.perf_counter()
    Z = None if use_stream else load_features(features, layer_name, token)[0]
    if Z is not None and Z.shape[0] == 0:
        raise MMConceptsError(f"the feature store {features} has no samples: extract features first")
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
    V = V.detach().to("cpu", torch.float32).contiguous()
    if part is not None:
        del model._group  # the collective is not part of the fitted dictionary
        V = group.gather_rows(V)  # every rank's activations, in store order, on rank 0
        if group.rank != 0:
            group.barrier()  # rank 0 writes the folder
            return out
    stats = code_stats(V)
    summary = {
        "method": method,
        "layer": layer_name,
        "token": token,
        "model": manifest.get("model"),
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
        "ranks": group.world,
        "device": str(device),
        "seed": seed,
        "params": model.get_params(),
        "relative_l1": relative_l1,
        **link_fields("features", features, out),  # written in a temp folder beside out: the same links
    }
    try:
        with OutputFolder(out, overwrite=overwrite, inputs=[features]) as tmp:
            try:
                from mmconcepts.decompose.persistence import provenance

                model.save(tmp, provenance=provenance(summary))
                save_file({"activations": V}, str(tmp / "activations.safetensors"))
            except OSError as exc:
                raise os_error(exc, f"cannot write the dictionary into {out}") from None
            write_json(tmp / "summary.json", summary, indent=2)
            if grounding is not None:
                from mmconcepts.concepts import ground

                ground(tmp, model=grounding_model, settings=grounding)
    finally:
        if part is not None:
            group.barrier()
    return out
