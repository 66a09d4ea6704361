"""Top-k sparse autoencoder concepts (Gao et al., 2024), trained with ``torch.optim.Adam``; for larger K.

Encoder ``V = TopK_k(ReLU((Z - b_dec) W_enc^T + b_enc))`` keeps the ``k`` largest pre-activations of each
sample (the rest are exactly 0); decoder ``Z ~ V U + b_dec`` with unit-norm concepts ``U``. Training, the
input scale, streaming and the saved training state are those of every SAE here
(:class:`~mmconcepts.decompose.sae.SparseAutoencoder`).
"""

from __future__ import annotations

import torch

from mmconcepts.decompose.sae import SparseAutoencoder


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest of each row of ``pre`` kept (ReLU'd), the rest 0."""
    top = torch.topk(pre, k, dim=1)
    return torch.zeros_like(pre).scatter_(1, top.indices, top.values.relu())


class TopKSAE(SparseAutoencoder):
    """Top-k sparse autoencoder: at most ``k`` active concepts per sample, activations >= 0.

    Parameters
    ----------
    n_concepts : int
        Dictionary size ``K``.
    k : int or None
        Active concepts per sample (default ``max(1, K // 5)``).
    max_iter : int
        Maximum epochs (passes over the data).
    tol : float
        Stop when an epoch's mean loss improves by less than ``tol`` (relative).
    batch_size : int
        Samples per Adam step.
    lr : float
        Adam learning rate (on the rescaled inputs).
    device, seed : str, int
        Compute device; seed of the initialisation and of the batch order.

    Attributes
    ----------
    components_ : (K, D) tensor
        Decoder rows (unit norm): the concepts.
    encoder_weight_, encoder_bias_, decoder_bias_ : tensors
        ``(K, D)``, ``(K,)``, ``(D,)``, in the features' scale.
    input_scale_ : float
        The scalar the inputs are divided by during training.
    input_centred_ : bool
        Whether ``decoder_bias_`` is subtracted before encoding (True when trained here).
    n_iter_ : int
        Epochs run (``partial_fit``: one more per call).

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(256, 4) @ torch.randn(4, 16)
    >>> sae = TopKSAE(n_concepts=8, k=2, max_iter=5).fit(Z)
    >>> int((sae.transform(Z) > 0).sum(1).max()) <= 2
    True
    """

    method = "topk-sae"
    _scaled_start = False  # at most k per sample already; and the results stay those of earlier versions

    def __init__(self, n_concepts: int = 20, *, k: int | None = None, max_iter: int = 100, tol: float = 1e-4,
                 batch_size: int = 256, lr: float = 3e-3, device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.k = k
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        self._check_k()

    def _train_codes(self, pre, trained):
        return topk_codes(pre, self._k), None

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The ``k`` largest ReLU pre-activations of each sample, the rest 0."""
        return topk_codes(pre, min(self._k, pre.shape[1]))
