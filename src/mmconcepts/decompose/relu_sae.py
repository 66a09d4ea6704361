"""ReLU sparse autoencoder concepts with an L1 penalty (the classic SAE; Bricken et al., 2023), trained with
``torch.optim.Adam``.

Encoder ``V = ReLU((Z - b_dec) W_enc^T + b_enc)``; decoder ``Z ~ V U + b_dec``. The objective per sample is
``0.5 ||z - v U - b_dec||^2 + l1 ||v||_1`` in the features' scale, Semi-NMF's scaling, so that ``l1`` and
``mmconcepts learn --relative-l1`` mean the same for both. The decoder rows are kept at unit norm (as for every
SAE here), so this plain L1 equals Anthropic's April 2024 penalty ``sum_k |v_k| ||u_k||`` (activations times
decoder norms); Anthropic trains with free norms instead. Training, the input scale, streaming and the saved
training state are those of every SAE here (:class:`~mmconcepts.decompose.sae.SparseAutoencoder`).
"""

from __future__ import annotations

import torch

from mmconcepts.decompose.sae import SparseAutoencoder
from mmconcepts.decompose.validation import check_float

#: ``l1`` when none is given, relative to the inputs' root mean squared norm (``input_scale_``).
DEFAULT_RELATIVE_L1 = 0.05


class ReLUSAE(SparseAutoencoder):
    """ReLU sparse autoencoder with an L1 penalty on the activations: activations >= 0, sparse by the penalty.

    Parameters
    ----------
    n_concepts : int
        Dictionary size ``K``.
    l1 : float or None
        Weight of ``||v||_1`` against ``0.5 ||z - z_hat||^2``, in the features' scale; None:
        ``0.05 * input_scale_`` (the inputs' root mean squared norm), the same sparsity at any feature scale.
    max_iter, tol, batch_size, lr, device, seed
        As :class:`~mmconcepts.decompose.topk_sae.TopKSAE`.

    Attributes
    ----------
    components_, encoder_weight_, encoder_bias_, decoder_bias_, input_scale_, input_centred_, n_iter_
        As every :class:`~mmconcepts.decompose.sae.SparseAutoencoder`.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(256, 4) @ torch.randn(4, 16)
    >>> sae = ReLUSAE(n_concepts=8, max_iter=5).fit(Z)
    >>> bool((sae.transform(Z) >= 0).all()), sae.components_.shape
    (True, torch.Size([8, 16]))
    """

    method = "relu-sae"

    def __init__(self, n_concepts: int = 20, *, l1: float | None = None, max_iter: int = 100, tol: float = 1e-4,
                 batch_size: int = 256, lr: float = 3e-3, device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.l1 = l1
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        if self.l1 is not None:
            check_float("l1", self.l1)

    def _train_codes(self, pre, trained):
        v = pre.relu()
        # 0.5 s^2 ||x' - x_hat'||^2 + l1 s ||v'||_1 in the training scale (x' = x / s), times 2 / s^2
        l1 = DEFAULT_RELATIVE_L1 * self.input_scale_ if self.l1 is None else float(self.l1)
        return v, (2 * l1 / self.input_scale_) * v.sum(1).mean()

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        """``ReLU(pre)``."""
        return pre.relu()
