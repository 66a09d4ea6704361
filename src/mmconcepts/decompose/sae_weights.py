"""A fitted sparse autoencoder from weights trained elsewhere: :func:`from_weights`, what the import of foreign
SAEs (:mod:`mmconcepts.exchange.import_sae`) builds its dictionaries with."""

from __future__ import annotations

from typing import Any

import torch

from mmconcepts.decompose.sae import SparseAutoencoder
from mmconcepts.errors import MMConceptsError

__all__ = ["from_weights"]


def from_weights(method: str | type, W_enc, b_enc, W_dec, b_dec, *, threshold=None, k: int | None = None,
                 input_centred: bool = True, **params: Any) -> SparseAutoencoder:
    """A fitted SAE dictionary from given tensors (an SAE trained elsewhere), ready to encode, save and load.

    The result has ``n_iter_ = 0``, ``input_scale_ = 1.0`` and ``reconstruction_err_ = nan`` (not measured;
    ``dictionary.json`` then holds ``NaN``, which Python's ``json`` writes and reads), and no training state:
    ``partial_fit`` on it starts fresh Adam moments from these weights (refused when ``input_centred`` is
    False, which training here does not model).

    Parameters
    ----------
    method : str or type
        A registry name (``"jumprelu-sae"``) or a :class:`SparseAutoencoder` subclass.
    W_enc : (K, D) array-like
        Encoder rows (``pre = (x - c * b_dec) @ W_enc.T + b_enc``).
    b_enc : (K,) array-like
    W_dec : (K, D) array-like
        Decoder rows, the concepts (any norm).
    b_dec : (D,) array-like
    threshold : (K,) or scalar array-like, or None
        The inference threshold, needed by the methods that have one (``threshold_``); a scalar is
        broadcast to ``K``.
    k : int or None
        Active concepts per sample (topk-sae; recorded for batchtopk-sae and matryoshka-sae).
    input_centred : bool
        Whether ``b_dec`` is subtracted from the input before encoding.
    **params
        Other parameters of the method (``bandwidth=``, ...).

    Returns
    -------
    SparseAutoencoder

    Examples
    --------
    >>> import torch
    >>> W = torch.eye(3, 4)
    >>> sae = from_weights("jumprelu-sae", W, torch.zeros(3), W, torch.zeros(4), threshold=0.5)
    >>> sae.transform(torch.tensor([[1.0, 0.2, 0.0, 0.0]])).tolist()
    [[1.0, 0.0, 0.0]]
    """
    from mmconcepts.decompose.registry import method_class

    cls = method_class(method) if isinstance(method, str) else method
    if not (isinstance(cls, type) and issubclass(cls, SparseAutoencoder)):
        raise MMConceptsError(f"{method!r} is not a sparse autoencoder method: choose relu-sae, topk-sae, "
                              "batchtopk-sae, jumprelu-sae or matryoshka-sae")

    def tensor(name, value, shape):
        t = torch.as_tensor(value).detach().to("cpu", torch.float32)
        if tuple(t.shape) != shape:
            raise MMConceptsError(f"{name} has shape {list(t.shape)}, expected {list(shape)}")
        if not bool(torch.isfinite(t).all()):
            raise MMConceptsError(f"{name} holds NaN or infinite values")
        return t.clone().contiguous()

    W_dec = torch.as_tensor(W_dec)
    if W_dec.ndim != 2:
        raise MMConceptsError(f"W_dec must be a (K, D) matrix, got shape {list(W_dec.shape)}")
    K, D = (int(n) for n in W_dec.shape)
    if k is not None:
        params["k"] = k
    if not isinstance(input_centred, bool):
        raise MMConceptsError(f"input_centred must be True or False, got {input_centred!r}")
    try:
        model = cls(K, **params)
    except TypeError:
        raise MMConceptsError(f"{cls.method} takes no parameter among {', '.join(sorted(params))}") from None
    model._check_params()
    model.components_ = tensor("W_dec", W_dec, (K, D))
    model.encoder_weight_ = tensor("W_enc", W_enc, (K, D))
    model.encoder_bias_ = tensor("b_enc", b_enc, (K,))
    model.decoder_bias_ = tensor("b_dec", b_dec, (D,))
    if "threshold_" in cls._fitted_tensors:
        if threshold is None:
            raise MMConceptsError(f"{cls.method} needs its inference threshold: pass threshold=")
        th = torch.as_tensor(threshold).detach().to("cpu", torch.float32)
        model.threshold_ = tensor("threshold", th.reshape(()).expand(K) if th.numel() == 1 else th, (K,))
    elif threshold is not None:
        raise MMConceptsError(f"{cls.method} has no threshold: drop threshold= or choose jumprelu-sae, "
                              "batchtopk-sae or matryoshka-sae")
    model.n_features_in_ = D
    model.n_iter_ = 0
    model.reconstruction_err_ = float("nan")
    model.input_scale_ = 1.0
    model.input_centred_ = input_centred
    return model
