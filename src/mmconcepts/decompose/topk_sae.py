"""Top-k sparse autoencoder concepts (Gao et al., 2024), trained with Adam; for larger dictionaries.

Encoder ``V = TopK_k(ReLU((Z - b_dec) W_enc^T + b_enc))`` keeps the ``k`` largest pre-activations of each
sample (the rest are exactly 0); decoder ``Z ~ V U + b_dec`` with unit-norm concepts ``U``. Inputs are
rescaled by one scalar during training (mean squared norm 1) so the learning rate does not depend on the
feature scale; the fitted tensors are expressed in the original scale.
"""

from __future__ import annotations

from typing import Any

import torch

from mmconcepts.decompose.base import (ConceptDictionary, check_float, check_int, check_n_concepts,
                                       relative_error, resolve_device)
from mmconcepts.decompose.kmeans import kmeans_plusplus
from mmconcepts.errors import MMConceptsError


def _encode(Z, W, b_enc, b_dec, k):
    pre = torch.addmm(b_enc, Z - b_dec, W.t())
    top = torch.topk(pre, k, dim=1)
    return torch.zeros_like(pre).scatter_(1, top.indices, top.values.relu())


class TopKSAE(ConceptDictionary):
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
        ``(K, D)``, ``(K,)``, ``(D,)``.
    n_iter_ : int
        Epochs run (``partial_fit``: batches seen).

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(256, 4) @ torch.randn(4, 16)
    >>> sae = TopKSAE(n_concepts=8, k=2, max_iter=5).fit(Z)
    >>> int((sae.transform(Z) > 0).sum(1).max()) <= 2
    True
    """

    method = "topk-sae"
    _fitted_tensors = ("components_", "encoder_weight_", "encoder_bias_", "decoder_bias_")

    def __init__(self, n_concepts: int = 20, *, k: int | None = None, max_iter: int = 100, tol: float = 1e-4,
                 batch_size: int = 256, lr: float = 3e-3, device: str = "cpu", seed: int = 0):
        self.n_concepts = check_int("n_concepts", n_concepts)
        self.k = None if k is None else check_int("k", k)
        if self.k is not None and self.k > self.n_concepts:
            raise MMConceptsError(f"k={k} active concepts cannot exceed n_concepts={n_concepts}")
        self.max_iter = check_int("max_iter", max_iter)
        self.tol = check_float("tol", tol)
        self.batch_size = check_int("batch_size", batch_size)
        self.lr = check_float("lr", lr, strict=True)
        self.device = device
        resolve_device(device)
        self.seed = check_int("seed", seed, 0)

    @property
    def _k(self) -> int:
        return self.k if self.k is not None else max(1, self.n_concepts // 5)

    def _setup(self, Z: torch.Tensor) -> None:
        check_n_concepts(self.n_concepts, Z.shape[0])
        self._gen = torch.Generator().manual_seed(self.seed)
        self._scale = float(Z.square().sum(1).mean().sqrt().clamp_min(1e-12))
        X = Z / self._scale
        sample = X[torch.randperm(X.shape[0], generator=self._gen)[:10000].to(X.device)]
        U = sample[kmeans_plusplus(sample, self.n_concepts, self._gen).to(X.device)]
        U = U / torch.linalg.vector_norm(U, dim=1, keepdim=True).clamp_min(1e-12)
        self._params = [p.requires_grad_() for p in
                        (U.clone(), U.clone(), torch.zeros(self.n_concepts, device=X.device),
                         torch.zeros(X.shape[1], device=X.device))]  # W_dec, W_enc, b_enc, b_dec
        self._moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self._params]
        self._steps = 0
        self.n_features_in_ = int(Z.shape[1])
        self.n_iter_ = 0

    def _adam_step(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        """Adam (Kingma & Ba), written out: ``torch.optim`` would import the compiler stack (seconds)."""
        self._steps += 1
        c1, c2 = 1 - beta1 ** self._steps, 1 - beta2 ** self._steps
        for p, (m, v) in zip(self._params, self._moments):
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-self.lr / c1)

    def _epoch(self, X: torch.Tensor) -> float:
        """One pass of Adam steps over the rescaled ``X``; returns the mean loss."""
        W_dec, W_enc, b_enc, b_dec = self._params
        order = torch.randperm(X.shape[0], generator=self._gen).to(X.device)
        total = 0.0
        for s in range(0, X.shape[0], self.batch_size):
            xb = X[order[s:s + self.batch_size]]
            v = _encode(xb, W_enc, b_enc, b_dec, self._k)
            loss = (v @ W_dec + b_dec - xb).square().sum(1).mean()
            for p in self._params:
                p.grad = None
            loss.backward()
            with torch.no_grad():  # keep the decoder rows on the unit sphere
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
                self._adam_step()
                W_dec /= torch.linalg.vector_norm(W_dec, dim=1, keepdim=True).clamp_min(1e-12)
            total += float(loss.detach()) * xb.shape[0]
        return total / X.shape[0]

    def _publish(self, Z: torch.Tensor) -> None:
        W_dec, W_enc, b_enc, b_dec = (p.detach() for p in self._params)
        self.components_ = W_dec.clone().cpu()
        self.encoder_weight_ = W_enc.clone().cpu()
        self.encoder_bias_ = (b_enc * self._scale).cpu()
        self.decoder_bias_ = (b_dec * self._scale).cpu()
        with torch.no_grad():
            self.reconstruction_err_ = relative_error(Z, self.inverse_transform(self.transform(Z)).to(Z.device))

    def fit(self, Z: Any) -> TopKSAE:
        """Train on ``Z`` (``N x D``) for up to ``max_iter`` epochs."""
        Z, _ = self._input(Z, n_features=None)
        self._setup(Z)
        X = Z / self._scale
        prev = None
        for epoch in range(1, self.max_iter + 1):
            loss = self._epoch(X)
            self.n_iter_ = epoch
            if prev is not None and abs(prev - loss) <= self.tol * abs(prev):
                break
            prev = loss
        self._publish(Z)
        return self

    def partial_fit(self, Z: Any) -> TopKSAE:
        """One pass of Adam steps over the batch ``Z`` (the first call initialises the model)."""
        first = not hasattr(self, "_params")
        Z, _ = self._input(Z, n_features=None if first else self.n_features_in_)
        if first:
            self._setup(Z)
        self._epoch(Z / self._scale)
        self.n_iter_ += 1
        self._publish(Z)
        return self

    def transform(self, Z: Any) -> torch.Tensor:
        """Activations: the ``k`` largest ReLU pre-activations of each sample, the rest 0."""
        self._check_fitted()
        Z, out = self._input(Z)
        dev = Z.device
        with torch.no_grad():
            V = _encode(Z, self.encoder_weight_.to(dev), self.encoder_bias_.to(dev), self.decoder_bias_.to(dev),
                        min(self._k, self.n_concepts))
        return V.to(out)

    def inverse_transform(self, V: Any) -> torch.Tensor:
        """``V @ components_ + decoder_bias_``."""
        return super().inverse_transform(V) + self.decoder_bias_.to(V.device if isinstance(V, torch.Tensor)
                                                                     else "cpu")

    def _check_loaded(self) -> None:
        super()._check_loaded()
        K, D = self.n_concepts, self.n_features_in_
        if (self.components_.shape != (K, D) or self.encoder_weight_.shape != (K, D)
                or self.encoder_bias_.shape != (K,) or self.decoder_bias_.shape != (D,)):
            raise MMConceptsError("the autoencoder tensors have the wrong shapes")
