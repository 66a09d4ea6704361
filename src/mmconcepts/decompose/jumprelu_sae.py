"""JumpReLU sparse autoencoder concepts (Rajamanoharan et al., 2024), trained with ``torch.optim.Adam``.

Encoder ``V = ReLU(pre) * (pre > threshold_)``: each concept fires only above its own learnt threshold, so
small activations are exact zeros without shrinking the large ones. Training minimises the squared error plus
``sparsity_coefficient * (L0 / target_l0 - 1)^2``, L0 the mean number of active concepts per sample
(dictionary_learning's target-L0 penalty: the sparsity is asked for in active concepts, by default
``max(1, K // 5)``, TopK's ``k``, so that the SAEs are compared at equal sparsity; a plain L0 penalty's
sparsity depends on the features' scale and K). The step function has no
gradient, so its derivative is the straight-through estimator with a rectangle kernel of width ``bandwidth``
(the paper's, as SAELens' "step" loss and dictionary_learning do): the threshold ``t`` gets
``-(t / bandwidth) * 1{|pre - t| < bandwidth / 2}`` from the JumpReLU and ``-(1 / bandwidth)`` times the same
window from the L0 term; the encoder gets no gradient through the L0 term (DeepMind's choice; Anthropic's
lets it through). The threshold is learnt as ``log t`` (the paper's parametrisation, positive by
construction), starting at ``init_threshold``; ``bandwidth`` and ``init_threshold`` are in the training scale
(inputs divided by ``input_scale_``, so rows of norm about 1), ``threshold_`` in the features' scale.

Training, the input scale, streaming and the saved training state are those of every SAE here
(:class:`~mmconcepts.decompose.sae.SparseAutoencoder`).
"""

from __future__ import annotations

import math

import torch

from mmconcepts.decompose.sae import SparseAutoencoder, sae_state
from mmconcepts.decompose.validation import check_float


def _rectangle(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """``x * (x > t)``, with the rectangle-kernel pseudo-derivative for ``t``."""

    @staticmethod
    def forward(ctx, x, t, bandwidth):
        ctx.save_for_backward(x, t)
        ctx.bandwidth = bandwidth
        return x * (x > t).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, t = ctx.saved_tensors
        eps = ctx.bandwidth
        t_grad = -(t / eps) * _rectangle((x - t) / eps) * grad
        return (x > t).to(x.dtype) * grad, t_grad.sum(0), None


class _Step(torch.autograd.Function):
    """``1{x > t}``, with the rectangle-kernel pseudo-derivative for ``t`` (none for ``x``)."""

    @staticmethod
    def forward(ctx, x, t, bandwidth):
        ctx.save_for_backward(x, t)
        ctx.bandwidth = bandwidth
        return (x > t).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, t = ctx.saved_tensors
        eps = ctx.bandwidth
        return torch.zeros_like(x), (-(1.0 / eps) * _rectangle((x - t) / eps) * grad).sum(0), None


class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU sparse autoencoder: a learnt threshold per concept, an L0 penalty; activations 0 or > threshold.

    Parameters
    ----------
    n_concepts : int
        Dictionary size ``K``.
    sparsity_coefficient : float
        Weight of the sparsity term ``(L0 / target_l0 - 1)^2`` against the squared error of the rescaled inputs.
    target_l0 : float or None
        Active concepts per sample asked for (default ``max(1, K // 5)``).
    bandwidth : float
        Width of the rectangle kernel of the straight-through estimator (training scale).
    init_threshold : float
        Smallest starting threshold (training scale); each concept starts at the quantile of its
        pre-activations that leaves ``target_l0`` concepts active per sample.
    max_iter, tol, batch_size, lr, device, seed
        As :class:`~mmconcepts.decompose.topk_sae.TopKSAE`.

    Attributes
    ----------
    threshold_ : (K,) tensor
        Each concept's threshold, in the features' scale.
    components_, encoder_weight_, encoder_bias_, decoder_bias_, input_scale_, input_centred_, n_iter_
        As every :class:`~mmconcepts.decompose.sae.SparseAutoencoder`.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(256, 4) @ torch.randn(4, 16)
    >>> sae = JumpReLUSAE(n_concepts=8, max_iter=5).fit(Z)
    >>> V = sae.transform(Z)
    >>> bool(((V == 0) | (V > sae.threshold_)).all())
    True
    """

    method = "jumprelu-sae"
    _fitted_tensors = SparseAutoencoder._fitted_tensors + ("threshold_",)
    _trained = ("log_threshold",)
    _state_tensors = sae_state(trained=_trained)

    def __init__(self, n_concepts: int = 20, *, sparsity_coefficient: float = 1.0, target_l0: float | None = None,
                 bandwidth: float = 0.01,
                 init_threshold: float = 0.01, max_iter: int = 100, tol: float = 1e-4, batch_size: int = 256,
                 lr: float = 3e-3, device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.sparsity_coefficient = sparsity_coefficient
        self.target_l0 = target_l0
        self.bandwidth = bandwidth
        self.init_threshold = init_threshold
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        check_float("sparsity_coefficient", self.sparsity_coefficient)
        if self.target_l0 is not None:
            check_float("target_l0", self.target_l0, strict=True)
        check_float("bandwidth", self.bandwidth, strict=True)
        check_float("init_threshold", self.init_threshold, strict=True)

    def _init_trained(self, name, X):
        return torch.full((self.n_concepts,), math.log(self.init_threshold), device=X.device)

    @property
    def _target_l0(self) -> float:
        return float(self.target_l0) if self.target_l0 is not None else float(max(1, int(self.n_concepts) // 5))

    def _start(self, Z):
        """As every SAE starts, then each threshold at the quantile of its concept's starting pre-activations
        (on the rescaled ``Z``) that leaves ``target_l0`` concepts active per sample on average (at least
        ``init_threshold``): the thresholds learn only from pre-activations within ``bandwidth`` of them, so a
        start far from the asked sparsity would take many steps to leave."""
        params, opt, gen = super()._start(Z)
        W_dec, W_enc, b_enc, b_dec, log_t = params
        with torch.no_grad():
            X = Z / self.input_scale_
            sample = X[torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(int(self.seed)))[:4096]
                       .to(X.device)]
            pre = torch.addmm(b_enc, sample - b_dec, W_enc.t())
            q = min(max(1.0 - self._target_l0 / self.n_concepts, 0.0), 1.0)
            t = torch.quantile(pre, q, dim=0).clamp_min(float(self.init_threshold))
            log_t.copy_(t.log())
        return params, opt, gen

    def _resume_trained(self, name):
        if hasattr(self, "_train_log_threshold"):
            return self._train_log_threshold
        return (self.threshold_ / self.input_scale_).clamp_min(1e-12).log()  # imported or saved without state

    def _publish(self, trained) -> None:
        self.threshold_ = trained["log_threshold"].exp() * self.input_scale_

    def _train_codes(self, pre, trained):
        t = trained["log_threshold"].exp()
        eps = float(self.bandwidth)
        v = _JumpReLU.apply(pre, t, eps)
        l0 = _Step.apply(pre, t, eps).sum(1).mean()
        return v, float(self.sparsity_coefficient) * (l0 / self._target_l0 - 1).square()

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        """``ReLU(pre) * (pre > threshold_)``."""
        return pre.relu() * (pre > self.threshold_.to(pre.device))
