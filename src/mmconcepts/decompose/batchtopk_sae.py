"""BatchTopK sparse autoencoder concepts (Bussmann et al., 2024), trained with ``torch.optim.Adam``.

While training, the ``k * B`` largest ReLU pre-activations of a batch of ``B`` samples are kept (the rest 0), so
samples share the batch's budget: ``k`` active concepts per sample on average, more for rich samples, fewer for
plain ones. At inference there is no batch: ``V = ReLU(pre) * (ReLU(pre) > threshold_)`` with one threshold
for every concept (a scalar broadcast to ``K`` in ``threshold_``), as dictionary_learning and SAELens do. The
threshold is the running mean of each training batch's smallest kept activation: an exponential moving
average with decay ``threshold_beta`` (dictionary_learning: 0.999, from step 1000), here bias-corrected as
Adam's moments are so that it holds from the first step, in the features' scale.

Not done here: dictionary_learning's auxiliary loss on dead latents (its ``auxk_alpha``); the k-means++ start
of every SAE here keeps few latents dead. Training, the input scale, streaming and the saved training state
are those of every SAE here (:class:`~mmconcepts.decompose.sae.SparseAutoencoder`).
"""

from __future__ import annotations

import torch

from mmconcepts.decompose.sae import SparseAutoencoder, sae_state
from mmconcepts.decompose.validation import check_float
from mmconcepts.errors import MMConceptsError


def batch_topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k * B`` largest entries of the ReLU'd batch ``pre`` (``B x K``) kept, the rest 0."""
    flat = pre.relu().flatten()
    top = torch.topk(flat, k * pre.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter_(0, top.indices, top.values).reshape(pre.shape)


class BatchTopKSAE(SparseAutoencoder):
    """BatchTopK sparse autoencoder: ``k`` active concepts per sample on average, activations >= 0.

    Parameters
    ----------
    n_concepts : int
        Dictionary size ``K``.
    k : int or None
        Mean active concepts per sample while training (default ``max(1, K // 5)``).
    threshold_beta : float
        Decay of the running mean of the smallest kept activation (the inference threshold), in ``[0, 1)``.
    max_iter, tol, batch_size, lr, device, seed
        As :class:`~mmconcepts.decompose.topk_sae.TopKSAE`.

    Attributes
    ----------
    threshold_ : (K,) tensor
        Inference threshold (one value, repeated), in the features' scale.
    components_, encoder_weight_, encoder_bias_, decoder_bias_, input_scale_, input_centred_, n_iter_
        As every :class:`~mmconcepts.decompose.sae.SparseAutoencoder`.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(512, 4) @ torch.randn(4, 16)
    >>> sae = BatchTopKSAE(n_concepts=8, k=2, max_iter=10).fit(Z)
    >>> 1.0 <= float((sae.transform(Z) > 0).sum(1).float().mean()) <= 3.0
    True
    """

    method = "batchtopk-sae"
    _fitted_tensors = SparseAutoencoder._fitted_tensors + ("threshold_",)
    _state_tensors = sae_state(running=("_threshold_ema",))
    _state_scalars = SparseAutoencoder._state_scalars + ("_threshold_steps",)

    def __init__(self, n_concepts: int = 20, *, k: int | None = None, threshold_beta: float = 0.99,
                 max_iter: int = 100, tol: float = 1e-4, batch_size: int = 256, lr: float = 3e-3,
                 device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.k = k
        self.threshold_beta = threshold_beta
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        self._check_k()
        check_float("threshold_beta", self.threshold_beta)
        if self.threshold_beta >= 1:
            raise MMConceptsError(f"threshold_beta must be below 1, got {self.threshold_beta!r}")

    # -- the running threshold (training scale)
    def _start_running(self, X) -> None:
        if X is None and hasattr(self, "threshold_"):  # resumed without saved state: start from threshold_
            self._threshold_ema = (self.threshold_[:1] / self.input_scale_).clone()
            self._threshold_steps = -1  # the mean holds already: no bias correction
            return
        self._threshold_ema = torch.zeros(1)
        self._threshold_steps = 0

    def _update_threshold(self, v: torch.Tensor) -> None:
        with torch.no_grad():  # on the device, without a sync: the smallest kept activation (0 when none)
            smallest = torch.where(v > 0, v, torch.inf).min()
            smallest = torch.where(torch.isinf(smallest), 0.0, smallest)
            b = float(self.threshold_beta)
            self._threshold_ema = b * self._threshold_ema.to(v.device) + (1 - b) * smallest
        if self._threshold_steps >= 0:
            self._threshold_steps += 1

    def _threshold(self) -> torch.Tensor:
        """The running threshold, bias-corrected, in the training scale (a 1-element tensor)."""
        steps = self._threshold_steps
        if steps == 0:
            return torch.zeros(1)
        return self._threshold_ema if steps < 0 else self._threshold_ema / (1 - float(self.threshold_beta) ** steps)

    def _publish(self, trained) -> None:
        self._threshold_ema = self._threshold_ema.cpu()
        self.threshold_ = (self._threshold() * self.input_scale_).expand(self.n_concepts).clone()

    def _train_codes(self, pre, trained):
        v = batch_topk_codes(pre, self._k)
        self._update_threshold(v)
        return v, None

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        """``ReLU(pre) * (ReLU(pre) > threshold_)``."""
        a = pre.relu()
        return a * (a > self.threshold_.to(pre.device))
