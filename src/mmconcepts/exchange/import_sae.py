"""``mmconcepts import-sae`` in Python: an SAE trained elsewhere (SAELens, sparsify, dictionary_learning) made an
ordinary concepts folder on a feature store, so that ``ground``, ``explain``, ``steer`` and ``evaluate`` read it
as they read ``learn``'s.

The SAE's files are read (:func:`~mmconcepts.exchange.foreign.read_foreign`), its hook mapped onto the store's
layers (:mod:`~mmconcepts.exchange.layers`; ``layer`` overrides), its tensors made the registry dictionary that
encodes the same way (:func:`~mmconcepts.decompose.sae_weights.from_weights`), and the store's features encoded shard
by shard, a bounded number of rows at a time: the training activations are kept as their non-zeros
(``activations.safetensors`` in its sparse form for a large or sparse dictionary,
:mod:`~mmconcepts.concepts.activations`), never as ``N x K``. ``summary.json`` records the method and
``imported_from`` (layout, path, hook, architecture, SHA-256 of the weights, what was folded into them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.decompose.settings import POOLS
from mmconcepts.params import Options, Text, param, settings_from, validate

#: Rows encoded at once hold at most this many activations (a 100k-latent SAE: 40 rows at a time).
ENCODE_ENTRIES = 1 << 22


@dataclass(frozen=True)
class ImportSettings:
    """What ``import-sae`` reads: which SAE of a run folder, onto which layer and word of the store.

    Parameters
    ----------
    layer : str, int or None
        The store's layer the SAE reads (``"12"``, ``-1``, ``"norm"``); ``None``: mapped from the SAE's hook.
    hookpoint : str or None
        The SAE's sub-folder in a run folder holding several (sparsify: ``"layers.12"``).
    token : str or None
        The word whose rows to encode, in a store of several words.
    pool : str
        Image-token stores: how an image's concept activation pools its patches' (``learn --pool``).
    """

    layer: str | int | None = param(None, optional=True, shown="mapped from the SAE's hook name or layer",
                                    help="the store's layer the SAE reads (e.g. 12, -1, norm)")
    hookpoint: str | None = param(None, constraint=Text(), optional=True, shown="the folder's only SAE",
                                  help="the SAE to import from a run folder holding several (sparsify: layers.12)")
    token: str | None = param(None, constraint=Text(), optional=True,
                              help="the word whose rows to encode (required when the store holds several words)")
    pool: str = param(POOLS[0], constraint=Options(POOLS, noun="pooling"),
                      help="image-token stores: an image's concept activation is its patches' max or mean")

    def __post_init__(self):
        validate(self)


def store_layer(sae, manifest: dict, layer=None) -> str:
    """The stored layer the SAE's activations are: ``layer`` when given, else its hook mapped; a one-line
    error when it cannot be mapped, or is not in the store."""
    from mmconcepts.exchange.layers import foreign_layer
    from mmconcepts.extract.store import stored_layer

    if layer is not None:
        return stored_layer(manifest, layer)
    mapped = foreign_layer(sae)
    said = f"hook {sae.hook!r}" if sae.hook else "no hook name"
    if sae.layout == "dictionary_learning" and sae.layer is not None:
        said = f"layer {sae.layer}" + (f", submodule {sae.hook!r}" if sae.hook else "")
    if mapped is None:
        raise MMConceptsError(f"the SAE's {said} names no layer of the model: give the store's layer it reads "
                              "with --layer")
    layers = [str(x) for x in manifest.get("layers", [])]
    if mapped not in layers:
        raise MMConceptsError(f"the SAE reads layer {mapped} ({said}), which this feature store does not hold "
                              f"(stored: {', '.join(layers)}): extract that layer, or give --layer")
    return mapped


class _Stats:
    """The summary's statistics of the activations, accumulated chunk by chunk (as ``code_stats``), and the
    relative reconstruction error."""

    def __init__(self):
        self.rows = self.entries = self.zeros = self.small = self.active = 0
        self.err = self.norm = 0.0

    def add(self, Z, V, Z_hat) -> None:
        top = V.abs().amax(dim=1, keepdim=True)
        self.rows += V.shape[0]
        self.entries += V.numel()
        self.zeros += int((V == 0).sum())
        self.small += int((V.abs() <= 0.01 * top).sum())
        self.active += int((V.abs() > 0.1 * top).sum())
        self.err += float((Z - Z_hat).double().square().sum())
        self.norm += float(Z.double().square().sum())

    def summary(self) -> dict:
        entries = max(self.entries, 1)
        return {"relative_error": (self.err / max(self.norm, 1e-300)) ** 0.5, "sparsity": self.small / entries,
                "exact_zeros": self.zeros / entries, "active_per_sample": self.active / max(self.rows, 1)}


def _encode_store(dictionary, features: Path, layer: str, token: str | None, stats: _Stats):
    """The activations of every row of the store, a chunk of rows at a time (a generator)."""
    import torch

    from mmconcepts.extract.features import iter_feature_shards

    rows = max(1, ENCODE_ENTRIES // dictionary.n_concepts_)
    with torch.no_grad():
        for shard in iter_feature_shards(features, layer, token):
            for start in range(0, shard.shape[0], rows):
                Z = shard[start:start + rows]
                V = dictionary.transform(Z)
                stats.add(Z, V, dictionary.inverse_transform(V))
                yield V


def import_sae(source: str | os.PathLike, *, features: str | os.PathLike, out: str | os.PathLike,
               settings: ImportSettings | None = None, overwrite: bool = False,
               finish: Callable[[Path], None] | None = None, **fields) -> Path:
    """Import the SAE in ``source`` as a concepts folder ``out`` on the feature store ``features``.

    Parameters
    ----------
    source : path
        A folder in SAELens, sparsify or dictionary_learning layout (or a run folder of several, with
        ``hookpoint``); see :mod:`~mmconcepts.exchange.foreign`.
    features : path
        The feature store (``mmconcepts extract``) of the model the SAE was trained on, holding the SAE's layer;
        its width must be the SAE's ``d_in``. The model is the store's (its run record).
    out : path
        The concepts folder to write (new or empty, unless ``overwrite``).
    settings : :class:`ImportSettings`, or its fields as keywords (``layer=``, ``hookpoint=``, ``token=``).
    overwrite : bool
        Replace a non-empty ``out``.
    finish : callable or None
        Called with the complete folder before it is swapped in (``import-sae`` grounds there), as ``learn``'s.

    Returns
    -------
    Path of ``out``.
    """
    from mmconcepts.decompose.learn import write_concepts
    from mmconcepts.decompose.sae_weights import from_weights
    from mmconcepts.concepts.activations import sparse_tensors, stored_tensors
    from mmconcepts.exchange.foreign import read_foreign
    from mmconcepts.extract.store import read_manifest, store_token
    from mmconcepts.files import link_fields
    from mmconcepts.outputs import FolderLock, check_writable_target

    settings = settings_from(ImportSettings, settings, fields, "import")
    features, out, source = Path(features), Path(out), Path(source)
    manifest = read_manifest(features)
    token = store_token(manifest, settings.token, features)
    sae = read_foreign(source, settings.hookpoint)
    layer = store_layer(sae, manifest, settings.layer)
    if sae.d_in != int(manifest["hidden_size"]):
        raise MMConceptsError(f"the SAE reads {sae.d_in}-wide activations but the feature store {features} holds "
                              f"{manifest['hidden_size']}-wide ones: use the store of the model the SAE was trained "
                              "on")
    dictionary = from_weights(sae.method, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, threshold=sae.threshold,
                              k=sae.k, input_centred=sae.input_centred, **sae.params)
    check_writable_target(out, overwrite, inputs=[features, sae.path])
    with FolderLock(out):
        start = time.perf_counter()
        stats = _Stats()
        tensors = sparse_tensors(_encode_store(dictionary, features, layer, token, stats), dictionary.n_concepts_)
        if stats.rows == 0:
            raise MMConceptsError(f"the feature store {features} has no samples: extract features first")
        measured = stats.summary()
        dictionary.reconstruction_err_ = float(measured["relative_error"])
        summary = {
            "method": sae.method, "layer": layer, "token": token, "model": manifest.get("model"),
            "n_samples": stats.rows, "n_concepts": sae.d_sae, "hidden_size": sae.d_in, **measured,
            "nonnegative_activations": bool(dictionary.nonnegative_activations), "n_iter": 0,
            "seconds": round(time.perf_counter() - start, 3), "streamed": True, "ranks": 1, "device": "cpu",
            "seed": None, "params": dictionary.get_params(), "relative_l1": None, "pool": settings.pool,
            "imported_from": {"layout": sae.layout, "path": str(sae.path.resolve()), "hook": sae.hook,
                              "layer": sae.layer, "architecture": sae.architecture, "sha256": sae.sha256(),
                              "folded": list(sae.folded)},
            **link_fields("features", features, out),
        }
        return write_concepts(out, dictionary, stored_tensors(tensors), summary, inputs=[features, sae.path],
                              overwrite=overwrite, finish=finish)
