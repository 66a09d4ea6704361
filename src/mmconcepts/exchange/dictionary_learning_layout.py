"""dictionary_learning's layout (Marks, Karvonen, Mueller): ``ae.pt``, the dictionary's ``state_dict`` saved with
``torch.save`` (read here with ``weights_only=True``: tensors only, never a pickle's code), and ``config.json``,
``{"trainer": trainer.config, "buffer": ...}`` as ``trainSAE`` writes it. ``trainer.dict_class`` names the class:

=========================  ===================================================  ==================
dict_class                 encode (inference)                                    method
=========================  ===================================================  ==================
``AutoEncoder``            ``relu(encoder(x - bias))``                            ``relu-sae``
``AutoEncoderTopK``        ``relu(encoder(x - b_dec))``, the ``k`` largest         ``topk-sae``
``BatchTopKSAE``           ``relu(encoder(x - b_dec))`` above ``threshold``        ``batchtopk-sae``
``MatryoshkaBatchTopKSAE`` ``relu((x - b_dec) @ W_enc + b_enc)`` above threshold   ``matryoshka-sae``
``JumpReluAutoEncoder``    ``relu(pre * (pre > threshold))``, ``pre = x @ W_enc + b_enc``  ``jumprelu-sae``
=========================  ===================================================  ==================

(``nn.Linear`` decoders hold ``d_in x d_sae`` weights, transposed here; ``W_enc`` parameters are ``d_in x d_sae``
too.) A ``norm_factor`` of training is already undone in the saved biases (``scale_biases``), so the weights
encode the raw activations, as the package's own ``encode`` does. ``trainer.layer`` and ``submodule_name`` say
where the activations were read.
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.exchange.foreign import ForeignSAE, checked, need, read_json_file

#: dict_class -> registry method.
CLASSES = {"AutoEncoder": "relu-sae", "AutoEncoderTopK": "topk-sae", "BatchTopKSAE": "batchtopk-sae",
           "MatryoshkaBatchTopKSAE": "matryoshka-sae", "JumpReluAutoEncoder": "jumprelu-sae"}


def _state(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MMConceptsError(f"{path} is missing") from None
    except Exception as exc:  # a truncated file, or a pickle holding more than tensors
        raise MMConceptsError(f"cannot read {path} with weights_only=True ({type(exc).__name__}): truncated, or "
                              "not a state_dict of tensors; save the dictionary's state_dict() with torch.save") \
            from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MMConceptsError(f"{path} is not a state_dict of tensors; save the dictionary's state_dict()")
    return state


def _transposed(t):
    """A ``d_in x d_sae`` weight (``nn.Linear`` decoders, ``W_enc`` parameters) as ``d_sae x d_in``."""
    return t.float().T


def _int(value, name: str, where: Path) -> int | None:
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point():
            raise MMConceptsError(f"{where}: {name} must be one integer")
        value = int(value.item())
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise MMConceptsError(f"{where}: {name} must be an integer, got {value!r}")


def read_dictionary_learning(folder: str | Path) -> ForeignSAE:
    """The dictionary of a dictionary_learning trainer folder (module docstring)."""
    import torch

    folder = Path(folder)
    where, weights = folder / "config.json", folder / "ae.pt"
    config = read_json_file(where)
    trainer = config.get("trainer")
    if not isinstance(trainer, dict):
        raise MMConceptsError(f"{where} has no 'trainer' object; is it the config.json dictionary_learning wrote?")
    dict_class = trainer.get("dict_class")
    if dict_class not in CLASSES:
        raise MMConceptsError(f"{where}: dict_class {dict_class!r} cannot be imported; supported: "
                              f"{', '.join(CLASSES)}")
    state = _state(weights)
    threshold, k, centred, params = None, None, True, {}
    if dict_class == "AutoEncoder":
        W_enc, b_enc, W_dec_t, b_dec = need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "bias"),
                                            weights)
        W_dec = _transposed(W_dec_t)
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        W_enc, b_enc, W_dec_t, b_dec, k = need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec",
                                                       "k"), weights)
        W_dec = _transposed(W_dec_t)
        if dict_class == "BatchTopKSAE":
            threshold = need(state, ("threshold",), weights)[0].float()
    elif dict_class == "MatryoshkaBatchTopKSAE":
        W_enc_t, b_enc, W_dec, b_dec, threshold, k, groups = need(
            state, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "k", "group_sizes"), weights)
        W_enc, threshold = _transposed(W_enc_t), threshold.float()
        params["group_sizes"] = [int(g) for g in groups.reshape(-1).tolist()]
    else:  # JumpReluAutoEncoder: apply_b_dec_to_input is False (an attribute, not saved)
        W_enc_t, b_enc, W_dec, b_dec, threshold = need(state, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
                                                       weights)
        W_enc, threshold, centred = _transposed(W_enc_t), threshold.float(), False
    k = _int(k, "k", weights)
    declared_k = _int(trainer.get("k"), "trainer.k", where)
    if k is not None and declared_k is not None and k != declared_k:
        raise MMConceptsError(f"{where}: the config says k={declared_k} but {weights.name} holds k={k}; the config "
                              "and the weights are from different dictionaries")
    if threshold is not None and threshold.numel() == 1:
        threshold = threshold.reshape(()).expand(W_dec.shape[0]).clone()
    buffer = config.get("buffer") if isinstance(config.get("buffer"), dict) else {}
    layer = _int(trainer.get("layer"), "trainer.layer", where)
    hook = trainer.get("submodule_name")
    sae = ForeignSAE(layout="dictionary_learning", architecture=dict_class, method=CLASSES[dict_class],
                     W_enc=W_enc.to(torch.float32), b_enc=b_enc.float(), W_dec=W_dec.float(), b_dec=b_dec.float(),
                     threshold=threshold, k=k if CLASSES[dict_class] != "relu-sae" else None, input_centred=centred,
                     hook=str(hook) if hook is not None else None, layer=layer,
                     reads_input=buffer.get("io") == "in", path=folder, weights=weights,
                     params=params)
    return checked(sae, _int(trainer.get("activation_dim"), "activation_dim", where),
                   _int(trainer.get("dict_size"), "dict_size", where))
