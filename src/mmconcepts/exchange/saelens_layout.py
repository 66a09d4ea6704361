"""SAELens' layout: ``cfg.json`` + ``sae_weights.safetensors``, as ``SAE.save_model`` (and
``TrainingSAE.save_inference_model``) writes them (sae_lens 6; the older flat configs read too).

Weights: ``W_enc`` is ``d_in x d_sae`` there (transposed here), ``b_enc``, ``W_dec`` (``d_sae x d_in``),
``b_dec``, and ``threshold`` (or ``log_threshold``) for ``jumprelu``. Encoding
``pre = (x - apply_b_dec_to_input * b_dec) @ W_enc + b_enc``, then:

- ``standard``: ``relu(pre)`` -> ``relu-sae``;
- ``topk``: the ``k`` largest, relu'd -> ``topk-sae`` (``rescale_acts_by_decoder_norm`` folded in: encoder rows
  and bias times the decoder norms, decoder rows divided by them, as SAELens' ``fold_W_dec_norm``);
- ``jumprelu``: ``relu(pre) * (pre > threshold)`` -> ``jumprelu-sae``; a BatchTopK or Matryoshka SAE is saved
  for inference as this (its ``metadata.training_architecture`` says which) -> ``batchtopk-sae`` /
  ``matryoshka-sae``, which encode the same way at inference.

``normalize_activations="expected_average_only_in"`` scales the input by a constant found at training time;
when the folder keeps it (``activation_scaler.json``, a SAELens checkpoint) it is folded into the weights as
``fold_activation_norm_scaling_factor`` does, otherwise the SAE is refused. Per-sample normalisations
(``layer_norm``, ``constant_norm_rescale``) and whitening cannot be folded into a linear encoder: refused.
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.exchange.foreign import ForeignSAE, checked, need, read_json_file, read_safetensors

#: SAELens inference architecture -> registry method.
ARCHITECTURES = {"standard": "relu-sae", "topk": "topk-sae", "jumprelu": "jumprelu-sae"}
#: ``metadata.training_architecture`` of a jumprelu-saved SAE -> registry method.
TRAINED_AS = {"batchtopk": "batchtopk-sae", "matryoshka_batchtopk": "matryoshka-sae"}


def _config(folder: Path) -> tuple[dict, dict]:
    """The config and its metadata (sae_lens 6 nests ``hook_name`` and friends under ``metadata``; older
    versions wrote them flat, ``hook_point`` for ``hook_name``)."""
    cfg = read_json_file(folder / "cfg.json")
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    flat = {k: cfg[k] for k in ("hook_name", "hook_point", "hook_head_index", "model_name") if k in cfg}
    metadata = {**flat, **metadata}
    if "hook_name" not in metadata and "hook_point" in metadata:
        metadata["hook_name"] = metadata["hook_point"]
    cfg = dict(cfg)
    if "architecture" not in cfg:  # before sae_lens 6: topk was an activation function
        kwargs = cfg.get("activation_fn_kwargs") or {}
        topk = cfg.get("activation_fn") == "topk" and isinstance(kwargs, dict) and kwargs.get("k") is not None
        cfg["architecture"] = "topk" if topk else "standard"
        if topk:
            cfg["k"] = kwargs["k"]
    if isinstance(cfg.get("normalize_activations"), bool):
        cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
    return cfg, metadata


def _scaling_factor(folder: Path, where: Path) -> float:
    scaler = folder / "activation_scaler.json"
    value = read_json_file(scaler).get("scaling_factor") if scaler.is_file() else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise MMConceptsError(f"{where}: normalize_activations is expected_average_only_in but no scaling factor is "
                              "stored with it (activation_scaler.json): fold it into the weights with "
                              "sae.fold_activation_norm_scaling_factor(factor) and save the SAE again")
    return float(value)


def read_saelens(folder: str | Path) -> ForeignSAE:
    """The SAE of a SAELens folder (module docstring)."""
    import torch

    folder = Path(folder)
    where, weights = folder / "cfg.json", folder / "sae_weights.safetensors"
    cfg, metadata = _config(folder)
    arch = cfg.get("architecture")
    if arch not in ARCHITECTURES:
        hint = " (a training checkpoint: save it with save_inference_model)" if arch in TRAINED_AS else ""
        raise MMConceptsError(f"{where}: SAELens architecture {arch!r} cannot be imported{hint}; supported: "
                              f"{', '.join(ARCHITECTURES)}")
    if cfg.get("activation_fn", "relu") not in ("relu", "topk") or cfg.get("reshape_activations", "none") != "none" \
            or metadata.get("hook_head_index") is not None:
        raise MMConceptsError(f"{where}: this SAE reads attention heads or uses activation "
                              f"{cfg.get('activation_fn')!r}; only SAEs on a layer's hidden states with a ReLU, "
                              "TopK or JumpReLU encoder can be imported")
    tensors = read_safetensors(weights)
    W_enc, b_enc, W_dec, b_dec = need(tensors, ("W_enc", "b_enc", "W_dec", "b_dec"), weights)
    W_enc, b_enc, W_dec, b_dec = (t.to(torch.float32) for t in (W_enc, b_enc, W_dec, b_dec))
    if W_enc.ndim != 2:
        raise MMConceptsError(f"{weights}: W_enc has shape {list(W_enc.shape)}, expected (d_in, d_sae)")
    W_enc = W_enc.T  # (d_in, d_sae) there, (d_sae, d_in) here
    folded = []
    threshold = None
    if arch == "jumprelu":
        if "threshold" in tensors:
            threshold = tensors["threshold"].float()
        elif "log_threshold" in tensors:
            threshold = tensors["log_threshold"].float().exp()
        else:
            need(tensors, ("threshold",), weights)
    scale = tensors.get("scaling_factor", tensors.get("finetuning_scaling_factor"))
    if scale is not None and not bool((scale == 1).all()):  # decode((acts * scale) @ W_dec): into the decoder
        if scale.shape != (W_dec.shape[0],):
            raise MMConceptsError(f"{weights}: scaling_factor has shape {list(scale.shape)}, expected "
                                  f"[{W_dec.shape[0]}]")
        W_dec = W_dec * scale.float()[:, None]
        folded.append("finetuning scaling factor")
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norms = W_dec.norm(dim=1).clamp(min=1e-8)  # sae_lens' fold_W_dec_norm
        W_dec, W_enc, b_enc = W_dec / norms[:, None], W_enc * norms[:, None], b_enc * norms
        folded.append("decoder norms (rescale_acts_by_decoder_norm)")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm == "expected_average_only_in":
        factor = _scaling_factor(folder, where)  # sae_lens' fold_activation_norm_scaling_factor
        W_enc, W_dec, b_dec = W_enc * factor, W_dec / factor, b_dec / factor
        folded.append(f"input scaling factor {factor:g}")
    elif norm != "none":
        raise MMConceptsError(f"{where}: normalize_activations={norm!r} normalises each input on its own, which a "
                              "linear encoder cannot hold; only 'none' and 'expected_average_only_in' import")
    method = ARCHITECTURES[arch]
    trained = metadata.get("training_architecture")
    if arch == "jumprelu" and trained in TRAINED_AS:
        method = TRAINED_AS[trained]
    k = cfg.get("k") if arch == "topk" else None
    if arch == "topk" and (isinstance(k, bool) or not isinstance(k, int)):
        raise MMConceptsError(f"{where}: a topk SAE needs an integer k, got {k!r}")
    if not isinstance(cfg.get("apply_b_dec_to_input", True), bool):
        raise MMConceptsError(f"{where}: apply_b_dec_to_input must be true or false")
    hook = metadata.get("hook_name")
    sae = ForeignSAE(layout="saelens", architecture=str(arch), method=method, W_enc=W_enc, b_enc=b_enc,
                     W_dec=W_dec, b_dec=b_dec, threshold=threshold, k=k,
                     input_centred=bool(cfg.get("apply_b_dec_to_input", True)),
                     hook=str(hook) if hook is not None else None, path=folder, weights=weights,
                     folded=tuple(folded))
    return checked(sae, cfg.get("d_in"), cfg.get("d_sae"))
