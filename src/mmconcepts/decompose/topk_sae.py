"""Top-k sparse autoencoder concepts (Gao et al., 2024), trained with ``torch.optim.Adam``; for larger K.

Encoder ``V = TopK_k(ReLU((Z - b_dec) W_enc^T + b_enc))`` keeps the ``k`` largest pre-activations of each
sample (the rest are exactly 0); decoder ``Z ~ V U + b_dec`` with unit-norm concepts ``U`` (the gradient
of ``U`` is projected onto the sphere's tangent before each Adam step, the rows renormalised after).
Inputs are divided by one scalar during training, ``input_scale_`` (the first batch's root mean squared
norm), so the learning rate does not depend on the feature scale; the published tensors are in the
original scale.

``partial_fit`` continues from the current state (``fit``, earlier ``partial_fit`` calls, or a loaded
dictionary): the training-scale parameters, Adam's moments and step count and the batch-order generator
are kept as private state tensors and saved with the dictionary, so save -> load -> ``partial_fit`` gives
bit for bit what ``partial_fit`` gives without the round trip. ``fit`` starts from scratch.

The first ``torch.optim.Adam`` of a process imports ``torch._dynamo`` (about 1 s, once).
"""

from __future__ import annotations

from typing import Any

import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.kmeans import kmeans_plusplus
from mmconcepts.decompose.validation import (check_float, check_int, check_n_concepts, relative_error,
                                             resolve_device)
from mmconcepts.errors import MMConceptsError

_PARAMS = ("W_dec", "W_enc", "b_enc", "b_dec")


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
        ``(K, D)``, ``(K,)``, ``(D,)``, in the features' scale.
    input_scale_ : float
        The scalar the inputs are divided by during training.
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
    _fitted_tensors = ("components_", "encoder_weight_", "encoder_bias_", "decoder_bias_")
    _fitted_scalars = ConceptDictionary._fitted_scalars + ("input_scale_",)
    _state_tensors = ("_train_b_enc", "_train_b_dec", "_rng_state",
                      *(f"_adam_{m}_{p}" for m in ("exp_avg", "exp_avg_sq") for p in _PARAMS))
    _state_scalars = ("_adam_steps",)

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
        check_int("k", self.k, optional=True)
        if self.k is not None and self.k > self.n_concepts:
            raise MMConceptsError(f"k={self.k} active concepts cannot exceed n_concepts={self.n_concepts}")
        check_int("max_iter", self.max_iter)
        check_float("tol", self.tol)
        check_int("batch_size", self.batch_size)
        check_float("lr", self.lr, strict=True)
        resolve_device(self.device)
        check_int("seed", self.seed, 0)

    @property
    def _k(self) -> int:
        return int(self.k) if self.k is not None else max(1, int(self.n_concepts) // 5)

    # -- training state: parameters in the training scale, Adam, the batch-order generator
    def _start(self, Z: torch.Tensor) -> tuple[list[torch.Tensor], torch.optim.Adam, torch.Generator]:
        """Fresh parameters seeded from ``Z`` (k-means++ rows of a sample), a fresh Adam and generator."""
        check_n_concepts(self.n_concepts, Z.shape[0])
        gen = torch.Generator().manual_seed(int(self.seed))
        self.input_scale_ = float(Z.square().sum(1).mean().sqrt().clamp_min(1e-12))
        X = Z / self.input_scale_
        sample = X[torch.randperm(X.shape[0], generator=gen)[:10000].to(X.device)]
        U = sample[kmeans_plusplus(sample, self.n_concepts, gen).to(X.device)]
        U = U / torch.linalg.vector_norm(U, dim=1, keepdim=True).clamp_min(1e-12)
        params = [p.requires_grad_() for p in (U.clone(), U.clone(), torch.zeros(self.n_concepts, device=X.device),
                                              torch.zeros(X.shape[1], device=X.device))]
        self.n_features_in_ = int(Z.shape[1])
        self.n_iter_ = 0
        return params, torch.optim.Adam(params, lr=self.lr), gen

    def _resume(self) -> tuple[list[torch.Tensor], torch.optim.Adam, torch.Generator]:
        """Parameters, Adam and generator rebuilt from the fitted tensors and the saved state."""
        dev = self._device
        tensors = (self.components_, self.encoder_weight_,
                   getattr(self, "_train_b_enc", self.encoder_bias_ / self.input_scale_),
                   getattr(self, "_train_b_dec", self.decoder_bias_ / self.input_scale_))
        params = [t.detach().to(dev, torch.float32).clone().requires_grad_() for t in tensors]
        opt = torch.optim.Adam(params, lr=self.lr)
        gen = torch.Generator()
        if hasattr(self, "_rng_state"):
            gen.set_state(self._rng_state.clone())
            for p, name in zip(params, _PARAMS):
                opt.state[p] = {"step": torch.tensor(float(self._adam_steps)),
                                "exp_avg": getattr(self, f"_adam_exp_avg_{name}").to(dev).clone(),
                                "exp_avg_sq": getattr(self, f"_adam_exp_avg_sq_{name}").to(dev).clone()}
        else:  # a dictionary saved without its training state: fresh moments, generator from the seed
            gen.manual_seed(int(self.seed))
        return params, opt, gen

    def _keep(self, params, opt: torch.optim.Adam, gen: torch.Generator, Z: torch.Tensor) -> None:
        """Publish the fitted tensors (features' scale) and keep the training state (as plain tensors)."""
        W_dec, W_enc, b_enc, b_dec = (p.detach() for p in params)
        s = self.input_scale_
        self.components_ = W_dec.clone().cpu()
        self.encoder_weight_ = W_enc.clone().cpu()
        self.encoder_bias_ = (b_enc * s).cpu()
        self.decoder_bias_ = (b_dec * s).cpu()
        self._train_b_enc, self._train_b_dec = b_enc.clone().cpu(), b_dec.clone().cpu()
        self._rng_state = gen.get_state()
        self._adam_steps = 0
        for p, name in zip(params, _PARAMS):
            state = opt.state.get(p, {})
            if state:
                self._adam_steps = int(state["step"])
            setattr(self, f"_adam_exp_avg_{name}",
                    state["exp_avg"].detach().cpu().clone() if state else torch.zeros_like(p.detach()).cpu())
            setattr(self, f"_adam_exp_avg_sq_{name}",
                    state["exp_avg_sq"].detach().cpu().clone() if state else torch.zeros_like(p.detach()).cpu())
        with torch.no_grad():
            self.reconstruction_err_ = relative_error(Z, self._decode(self._encode(Z)))

    def _epoch(self, X: torch.Tensor, params, opt: torch.optim.Adam, gen: torch.Generator) -> float:
        """One pass of Adam steps over the rescaled ``X`` in the generator's order; returns the mean loss."""
        W_dec, W_enc, b_enc, b_dec = params
        order = torch.randperm(X.shape[0], generator=gen).to(X.device)
        total = 0.0
        for s in range(0, X.shape[0], self.batch_size):
            xb = X[order[s:s + self.batch_size]]
            v = _encode(xb, W_enc, b_enc, b_dec, self._k)
            loss = (v @ W_dec + b_dec - xb).square().sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep the decoder rows on the unit sphere
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= torch.linalg.vector_norm(W_dec, dim=1, keepdim=True).clamp_min(1e-12)
            total += float(loss.detach()) * xb.shape[0]
        return total / X.shape[0]

    # -- fitting
    def fit(self, Z: Any, y: None = None) -> TopKSAE:
        """Train from scratch on ``Z`` (``N x D``) for up to ``max_iter`` epochs; ``y`` is ignored."""
        Z, _ = self._fit_input(Z)
        params, opt, gen = self._start(Z)
        X = Z / self.input_scale_
        prev = None
        for epoch in range(1, self.max_iter + 1):
            loss = self._epoch(X, params, opt, gen)
            self.n_iter_ = epoch
            if prev is not None and abs(prev - loss) <= self.tol * abs(prev):
                break
            prev = loss
        self._keep(params, opt, gen, Z)
        return self

    def partial_fit(self, Z: Any, y: None = None) -> TopKSAE:
        """One pass of Adam steps over the batch ``Z``, continuing from the current state.

        The state is that of ``fit``, of earlier ``partial_fit`` calls or of a loaded dictionary (its Adam
        moments and batch-order generator included); unfitted, the first call initialises the model from
        this batch.

        Parameters
        ----------
        Z : (n, D) tensor or array
        y : ignored

        Returns
        -------
        self
        """
        fitted, Z = self._continuing(Z)
        params, opt, gen = self._resume() if fitted else self._start(Z)
        self._epoch(Z / self.input_scale_, params, opt, gen)
        self.n_iter_ += 1
        self._keep(params, opt, gen, Z)
        return self

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Activations: the ``k`` largest ReLU pre-activations of each sample, the rest 0."""
        dev = Z.device
        return _encode(Z, self.encoder_weight_.to(dev), self.encoder_bias_.to(dev), self.decoder_bias_.to(dev),
                       min(self._k, self.components_.shape[0]))

    def _decode(self, V: torch.Tensor) -> torch.Tensor:
        """``V @ components_ + decoder_bias_``."""
        return super()._decode(V) + self.decoder_bias_.to(V.device)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        K, D = self.n_concepts, self.n_features_in_
        if (self.components_.shape != (K, D) or self.encoder_weight_.shape != (K, D)
                or self.encoder_bias_.shape != (K,) or self.decoder_bias_.shape != (D,)):
            raise MMConceptsError("the autoencoder tensors have the wrong shapes")
        if self._has_state("training state") and (
                self._train_b_enc.shape != (K,) or self._train_b_dec.shape != (D,)
                or self._rng_state.dtype != torch.uint8):
            raise MMConceptsError("the training state does not match the autoencoder")
