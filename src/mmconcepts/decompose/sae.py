"""Shared base of the sparse autoencoders (``relu-sae``, ``topk-sae``, ``batchtopk-sae``, ``jumprelu-sae``,
``matryoshka-sae``), trained with ``torch.optim.Adam``, and :func:`from_weights` for SAEs trained elsewhere.

Every SAE encodes ``pre = (Z - c * b_dec) W_enc^T + b_enc`` (``c`` = ``input_centred_``, True for the SAEs
trained here) and keeps some of ``ReLU(pre)`` (each method its own way, :meth:`SparseAutoencoder._activate`);
it decodes ``Z ~ V U + b_dec`` with the concepts ``U`` = ``components_``. Training, shared by all:

- the inputs are divided by one scalar, ``input_scale_`` (the first batch's root mean squared norm), so the
  learning rate and the penalties do not depend on the feature scale; published tensors are in the original
  scale (biases and thresholds multiplied back by ``input_scale_``);
- decoder and encoder start from the same k-means++ rows of a sample (unit norm), the biases at 0;
- each Adam step projects the decoder's gradient onto the unit sphere's tangent and renormalises the rows
  after, so the concepts stay unit norm;
- ``partial_fit`` continues from the current state (``fit``, earlier calls, or a loaded dictionary): the
  training-scale parameters, Adam's moments and step count, the batch-order generator and the method's own
  running state are private state tensors saved with the dictionary, so save -> load -> ``partial_fit`` gives
  bit for bit what ``partial_fit`` gives without the round trip; ``fit`` starts from scratch;
- ``fit_transform_shards`` trains on a store read shard by shard (``max_iter`` passes, each shard once per
  pass in the store's order, its rows shuffled), so ``mmconcepts learn`` streams large stores.

A subclass sets ``method``, stores its parameters in ``__init__``, extends ``_check_params``, and implements
:meth:`_train_codes` (the activations while training, with any penalty) and :meth:`_activate` (at inference);
extra trainable tensors are named in ``_trained`` (``_init_trained`` / ``_publish``) and running state is
kept as private attributes listed in ``_state_tensors``.

The first ``torch.optim.Adam`` of a process imports ``torch._dynamo`` (about 1 s, once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.kmeans import kmeans_plusplus
from mmconcepts.decompose.validation import (check_float, check_int, check_n_concepts, relative_error,
                                             resolve_device)
from mmconcepts.errors import MMConceptsError

__all__ = ["SparseAutoencoder", "sae_state"]

_PARAMS = ("W_dec", "W_enc", "b_enc", "b_dec")


def sae_state(trained: tuple[str, ...] = (), running: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The private state tensors of an SAE with extra trainable tensors ``trained`` and running state
    ``running`` (names of private attributes): training-scale biases and extras, the generator, Adam's moments."""
    return ("_train_b_enc", "_train_b_dec", "_rng_state", *(f"_train_{n}" for n in trained), *running,
            *(f"_adam_{m}_{p}" for m in ("exp_avg", "exp_avg_sq") for p in (*_PARAMS, *trained)))


class SparseAutoencoder(ConceptDictionary):
    """Base of the sparse autoencoders: training, streaming, encoding and decoding shared by every variant.

    Attributes (fitted)
    -------------------
    components_ : (K, D) tensor
        Decoder rows ``W_dec``: the concepts (unit norm when trained here; any norm when imported).
    encoder_weight_, encoder_bias_, decoder_bias_ : tensors
        ``(K, D)``, ``(K,)``, ``(D,)``, in the features' scale.
    input_scale_ : float
        The scalar the inputs are divided by during training (1.0 for :func:`from_weights`).
    input_centred_ : bool
        Whether ``decoder_bias_`` is subtracted from the input before encoding (True for ours).
    n_iter_ : int
        Epochs run (``partial_fit``: one more per call).
    reconstruction_err_ : float
        Relative error on the training data (NaN for :func:`from_weights`: not measured).
    """

    _fitted_tensors: ClassVar[tuple[str, ...]] = ("components_", "encoder_weight_", "encoder_bias_",
                                                   "decoder_bias_")
    _fitted_scalars = ConceptDictionary._fitted_scalars + ("input_scale_", "input_centred_")
    _scalar_defaults: ClassVar[dict[str, Any]] = {"input_centred_": True}  # topk-sae files saved before it
    #: Extra trainable tensors (training scale, kept as ``_train_<name>``), besides W_dec, W_enc, b_enc, b_dec.
    _trained: ClassVar[tuple[str, ...]] = ()
    _state_tensors = sae_state()
    _state_scalars = ("_adam_steps",)
    #: Whether the starting encoder is scaled to reconstruct a sample best (:meth:`_scale_encoder`).
    _scaled_start: ClassVar[bool] = True

    # -- parameters
    def _check_params(self) -> None:
        super()._check_params()
        check_int("max_iter", self.max_iter)
        check_float("tol", self.tol)
        check_int("batch_size", self.batch_size)
        check_float("lr", self.lr, strict=True)
        resolve_device(self.device)
        check_int("seed", self.seed, 0)

    def _check_k(self) -> None:
        """``k`` (optional) a positive int no larger than ``n_concepts``."""
        check_int("k", self.k, optional=True)
        if self.k is not None and self.k > self.n_concepts:
            raise MMConceptsError(f"k={self.k} active concepts cannot exceed n_concepts={self.n_concepts}")

    @property
    def _k(self) -> int:
        return int(self.k) if self.k is not None else max(1, int(self.n_concepts) // 5)

    # -- what each method implements
    def _train_codes(self, pre: torch.Tensor, trained: dict[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activations of a training batch from its pre-activations (training scale), and the penalty added
        to the reconstruction loss (None: none)."""
        raise NotImplementedError

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Activations at inference from the pre-activations (features' scale)."""
        raise NotImplementedError

    def _init_trained(self, name: str, X: torch.Tensor) -> torch.Tensor:
        """Initial value of the extra trainable tensor ``name`` (training scale)."""
        raise NotImplementedError

    def _publish(self, trained: dict[str, torch.Tensor]) -> None:
        """Set the method's fitted tensors from its extra trainable tensors and running state."""

    def _start_running(self, X: torch.Tensor) -> None:
        """Reset the method's running state (fresh training)."""

    def _reconstruction_loss(self, xb: torch.Tensor, v: torch.Tensor, W_dec: torch.Tensor,
                             b_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over the batch of the squared error of the reconstruction (Matryoshka: of nested prefixes), and
        the batch's summed squared error of the whole reconstruction (detached: the error :meth:`partial_fit`
        reports, with no extra pass)."""
        err = (v @ W_dec + b_dec - xb).square().sum(1)
        return err.mean(), err.sum().detach()

    # -- training state: parameters in the training scale, Adam, the batch-order generator
    def _start(self, Z: torch.Tensor) -> tuple[list[torch.Tensor], torch.optim.Adam, torch.Generator]:
        """Fresh parameters seeded from ``Z`` (k-means++ rows of a sample of ``max(2048, 2K)`` rows, at most
        10,000), a fresh Adam and generator."""
        check_n_concepts(self.n_concepts, Z.shape[0])
        gen = torch.Generator().manual_seed(int(self.seed))
        self.input_scale_ = float(Z.square().sum(1).mean().sqrt().clamp_min(1e-12))
        self.input_centred_ = True
        X = Z / self.input_scale_
        # k-means++ costs O(sample x K x D) in K sequential steps: 2 rows per concept (at least 2048, at most
        # 10,000) seed as well as more and keep the start below an epoch's cost
        size = min(10000, max(2048, 2 * int(self.n_concepts)))
        sample = X[torch.randperm(X.shape[0], generator=gen)[:size].to(X.device)]
        U = sample[kmeans_plusplus(sample, self.n_concepts, gen).to(X.device)]
        U = U / torch.linalg.vector_norm(U, dim=1, keepdim=True).clamp_min(1e-12)
        params = [p.requires_grad_() for p in (U.clone(), U.clone(), torch.zeros(self.n_concepts, device=X.device),
                                              torch.zeros(X.shape[1], device=X.device))]
        params += [self._init_trained(name, X).requires_grad_() for name in self._trained]
        self._start_running(X)
        if self._scaled_start:
            self._scale_encoder(sample, params)
            self._start_running(X)
        self.n_features_in_ = int(Z.shape[1])
        self.n_iter_ = 0
        return params, torch.optim.Adam(params, lr=self.lr), gen

    def _scale_encoder(self, sample: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Scale the starting encoder by the ``c`` that best reconstructs ``sample`` as ``c * v U`` (``v`` its
        starting activations): with every concept starting as a sample, the activations of similar concepts
        add up to several times the input, a bad start for methods whose activations are not capped per sample."""
        W_dec, W_enc, b_enc, b_dec, *extra = params
        with torch.no_grad():
            v, _ = self._train_codes(torch.addmm(b_enc, sample - b_dec, W_enc.t()), dict(zip(self._trained, extra)))
            R = v @ W_dec
            c = float((R * sample).sum() / R.square().sum().clamp_min(1e-12))
            if math.isfinite(c) and c > 0:
                W_enc *= c

    def _resume(self) -> tuple[list[torch.Tensor], torch.optim.Adam, torch.Generator]:
        """Parameters, Adam and generator rebuilt from the fitted tensors and the saved state."""
        if not getattr(self, "input_centred_", True):
            raise MMConceptsError("this autoencoder does not subtract its decoder bias from the input (imported): "
                                  "it cannot be trained further here; call fit to train one from scratch")
        dev = self._device
        names = (*_PARAMS, *self._trained)
        tensors = [self.components_, self.encoder_weight_,
                   getattr(self, "_train_b_enc", self.encoder_bias_ / self.input_scale_),
                   getattr(self, "_train_b_dec", self.decoder_bias_ / self.input_scale_)]
        tensors += [self._resume_trained(name) for name in self._trained]
        params = [t.detach().to(dev, torch.float32).clone().requires_grad_() for t in tensors]
        opt = torch.optim.Adam(params, lr=self.lr)
        gen = torch.Generator()
        if hasattr(self, "_rng_state"):
            gen.set_state(self._rng_state.clone())
            for p, name in zip(params, names):
                opt.state[p] = {"step": torch.tensor(float(self._adam_steps)),
                                "exp_avg": getattr(self, f"_adam_exp_avg_{name}").to(dev).clone(),
                                "exp_avg_sq": getattr(self, f"_adam_exp_avg_sq_{name}").to(dev).clone()}
        else:  # a dictionary saved without its training state: fresh moments, generator from the seed
            gen.manual_seed(int(self.seed))
            self._start_running(None)
        return params, opt, gen

    def _resume_trained(self, name: str) -> torch.Tensor:
        """The extra trainable tensor ``name`` of a dictionary saved without its training state."""
        return getattr(self, f"_train_{name}")

    def _keep(self, params, opt: torch.optim.Adam, gen: torch.Generator) -> None:
        """Publish the fitted tensors (features' scale) and keep the training state (as plain tensors)."""
        W_dec, W_enc, b_enc, b_dec, *extra = (p.detach() for p in params)
        s = self.input_scale_
        self.components_ = W_dec.clone().cpu()
        self.encoder_weight_ = W_enc.clone().cpu()
        self.encoder_bias_ = (b_enc * s).cpu()
        self.decoder_bias_ = (b_dec * s).cpu()
        self._train_b_enc, self._train_b_dec = b_enc.clone().cpu(), b_dec.clone().cpu()
        trained = {name: t.clone().cpu() for name, t in zip(self._trained, extra)}
        for name, t in trained.items():
            setattr(self, f"_train_{name}", t)
        self._publish(trained)
        self._rng_state = gen.get_state()
        self._adam_steps = 0
        for p, name in zip(params, (*_PARAMS, *self._trained)):
            state = opt.state.get(p, {})
            if state:
                self._adam_steps = int(state["step"])
            setattr(self, f"_adam_exp_avg_{name}",
                    state["exp_avg"].detach().cpu().clone() if state else torch.zeros_like(p.detach()).cpu())
            setattr(self, f"_adam_exp_avg_sq_{name}",
                    state["exp_avg_sq"].detach().cpu().clone() if state else torch.zeros_like(p.detach()).cpu())

    def _epoch(self, X: torch.Tensor, params, opt: torch.optim.Adam, gen: torch.Generator) -> tuple[float, float]:
        """One pass of Adam steps over the rescaled ``X`` in the generator's order; returns the mean loss and the
        relative error of the reconstructions the steps made (each before its step)."""
        W_dec, W_enc, b_enc, b_dec, *extra = params
        trained = dict(zip(self._trained, extra))
        order = torch.randperm(X.shape[0], generator=gen).to(X.device)
        total = torch.zeros((), dtype=torch.float64, device=X.device)  # summed without a sync each step
        squared = torch.zeros((), dtype=torch.float64, device=X.device)
        for s in range(0, X.shape[0], self.batch_size):
            xb = X[order[s:s + self.batch_size]]
            v, penalty = self._train_codes(torch.addmm(b_enc, xb - b_dec, W_enc.t()), trained)
            loss, batch_squared = self._reconstruction_loss(xb, v, W_dec, b_dec)
            squared += batch_squared.double()
            if penalty is not None:
                loss = loss + penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep the decoder rows on the unit sphere
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= torch.linalg.vector_norm(W_dec, dim=1, keepdim=True).clamp_min(1e-12)
            total += loss.detach().double() * xb.shape[0]
        norm = float(torch.linalg.vector_norm(X, dtype=torch.float64))
        return float(total) / X.shape[0], math.sqrt(float(squared)) / max(norm, 1e-300)

    # -- fitting
    def fit(self, Z: Any, y: None = None) -> SparseAutoencoder:
        """Train from scratch on ``Z`` (``N x D``) for up to ``max_iter`` epochs; ``y`` is ignored.

        Parameters
        ----------
        Z : (N, D) tensor or array
        y : ignored

        Returns
        -------
        self
        """
        Z, _ = self._fit_input(Z)
        params, opt, gen = self._start(Z)
        X = Z / self.input_scale_
        prev = None
        for epoch in range(1, self.max_iter + 1):
            loss, _ = self._epoch(X, params, opt, gen)
            self.n_iter_ = epoch
            if prev is not None and abs(prev - loss) <= self.tol * abs(prev):
                break
            prev = loss
        self._keep(params, opt, gen)
        self._measure(Z)
        return self

    def partial_fit(self, Z: Any, y: None = None) -> SparseAutoencoder:
        """One pass of Adam steps over the batch ``Z``, continuing from the current state.

        The state is that of ``fit``, of earlier ``partial_fit`` calls or of a loaded dictionary (its Adam
        moments, batch-order generator and running state included); unfitted, the first call initialises the
        model from this batch. ``reconstruction_err_`` is the batch's relative error during its pass (each
        step's training codes before the step: no extra pass over the batch, which would cost a third of the
        pass; ``reconstruction_error(Z)`` measures it after).

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
        _, self.reconstruction_err_ = self._epoch(Z / self.input_scale_, params, opt, gen)
        self.n_iter_ += 1
        self._keep(params, opt, gen)
        return self

    def _measure(self, Z: torch.Tensor) -> None:
        with torch.no_grad():
            self.reconstruction_err_ = relative_error(Z, self._decode(self._encode(Z)))

    def fit_shards(self, shards: Callable[[], Iterable[Any]] | Iterable[Any]) -> SparseAutoencoder:
        """Train from scratch on data given shard by shard (``lambda: iter_feature_shards(store, layer)``).

        ``max_iter`` passes over the shards in their order, each shard's rows shuffled (one
        :meth:`partial_fit` a shard); the model is initialised from the first shard (which must hold at least
        ``n_concepts`` rows). Only one shard is in memory at a time.

        Parameters
        ----------
        shards : callable returning a fresh iterator of (n, D) tensors, or a list of them

        Returns
        -------
        self
        """
        self._fit_shards(shards, keep_codes=False)
        return self

    def fit_transform_shards(self, shards) -> torch.Tensor:
        """:meth:`fit_shards`, returning the training activations (``N x K`` torch tensor, on the CPU)."""
        return self._fit_shards(shards, keep_codes=True)

    def _fit_shards(self, shards, keep_codes: bool):
        self._check_params()
        if getattr(getattr(self, "_group", None), "world", 1) > 1:
            raise MMConceptsError(f"{self.method} cannot learn data-parallel: under torchrun use semi-nmf or nmf")
        if callable(shards):
            batches = shards
        elif iter(shards) is shards:
            raise MMConceptsError("fit_shards needs a list of tensors or a function returning a fresh iterator "
                                  "(a generator can be read only once)")
        else:
            def batches():
                return iter(shards)
        self._clear_fitted()
        for epoch in range(1, self.max_iter + 1):
            for Zb in batches():
                fitted, Zb = self._continuing(Zb)
                params, opt, gen = self._resume() if fitted else self._start(Zb)
                self._epoch(Zb / self.input_scale_, params, opt, gen)
                self._keep(params, opt, gen)
            if not hasattr(self, "components_"):
                raise MMConceptsError("no shards to fit on: check the feature store and layer")
            self.n_iter_ = epoch
        codes, num, den = [], 0.0, 0.0
        with torch.no_grad():
            for Zb in batches():
                Zb, _ = self._input(Zb)
                V = self._encode(Zb)
                num += float((Zb - self._decode(V)).double().square().sum())
                den += float(Zb.double().square().sum())
                if keep_codes:
                    codes.append(V.cpu())
        self.reconstruction_err_ = math.sqrt(num / max(den, 1e-300))
        return torch.cat(codes) if keep_codes else None

    # -- encoding and decoding
    def _pre(self, Z: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``(Z - c * b_dec) W_enc^T + b_enc`` (``c`` = ``input_centred_``)."""
        dev = Z.device
        X = Z - self.decoder_bias_.to(dev) if self.input_centred_ else Z
        return torch.addmm(self.encoder_bias_.to(dev), X, self.encoder_weight_.to(dev).t())

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Activations of the checked ``Z``: the method's activation of the pre-activations."""
        return self._activate(self._pre(Z))

    def _decode(self, V: torch.Tensor) -> torch.Tensor:
        """``V @ components_ + decoder_bias_``."""
        return super()._decode(V) + self.decoder_bias_.to(V.device)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        K, D = self.n_concepts, self.n_features_in_
        if (self.components_.shape != (K, D) or self.encoder_weight_.shape != (K, D)
                or self.encoder_bias_.shape != (K,) or self.decoder_bias_.shape != (D,)):
            raise MMConceptsError("the autoencoder tensors have the wrong shapes")
        if "threshold_" in self._fitted_tensors and self.threshold_.shape != (K,):
            raise MMConceptsError("the autoencoder's threshold_ has the wrong shape")
        if not isinstance(self.input_centred_, bool):
            raise MMConceptsError("input_centred_ must be true or false")
        if self._has_state("training state") and (
                self._train_b_enc.shape != (K,) or self._train_b_dec.shape != (D,)
                or self._rng_state.dtype != torch.uint8):
            raise MMConceptsError("the training state does not match the autoencoder")
