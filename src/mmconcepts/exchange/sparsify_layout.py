"""sparsify's layout (EleutherAI): one folder per hookpoint, named by it (``layers.12``), holding ``cfg.json``
(``SparseCoderConfig`` plus ``d_in``) and ``sae.safetensors`` as ``SparseCoder.save_to_disk`` writes them.

Weights ``encoder.weight`` (``K x D``), ``encoder.bias``, ``W_dec`` (``K x D``), ``b_dec``. Encoding
``relu(encoder(x - b_dec))`` then the ``k`` largest -> ``topk-sae``. Transcoders (``transcode``), skip
connections and the ``groupmax`` activation have no counterpart here: refused.
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.exchange.foreign import ForeignSAE, checked, need, read_json_file, read_safetensors


def read_sparsify(folder: str | Path) -> ForeignSAE:
    """The SAE of one sparsify hookpoint folder (module docstring)."""
    import torch

    folder = Path(folder)
    where, weights = folder / "cfg.json", folder / "sae.safetensors"
    cfg = read_json_file(where)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise MMConceptsError(f"{where}: sparsify activation {activation!r} cannot be imported; only topk")
    for option in ("transcode", "skip_connection"):
        if cfg.get(option):
            raise MMConceptsError(f"{where}: {option} is set: this is not a plain sparse autoencoder of one layer's "
                                  "states, and cannot be imported")
    k = cfg.get("k")
    if isinstance(k, bool) or not isinstance(k, int):
        raise MMConceptsError(f"{where}: k must be an integer, got {k!r}")
    tensors = read_safetensors(weights)
    W_enc, b_enc, W_dec, b_dec = (t.to(torch.float32) for t in need(
        tensors, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), weights))
    d_in = cfg.get("d_in")
    latents = cfg.get("num_latents") or None
    if latents is None and isinstance(d_in, int) and isinstance(cfg.get("expansion_factor"), int):
        latents = d_in * cfg["expansion_factor"]
    sae = ForeignSAE(layout="sparsify", architecture="topk", method="topk-sae", W_enc=W_enc, b_enc=b_enc,
                     W_dec=W_dec, b_dec=b_dec, k=k, input_centred=True, hook=folder.name, path=folder,
                     weights=weights)
    return checked(sae, d_in, latents)
