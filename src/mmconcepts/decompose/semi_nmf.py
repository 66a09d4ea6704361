"""Semi-NMF concept dictionary: ``Z ~ V U`` with activations ``V >= 0`` and free concepts ``U``.

With ``l1 > 0`` it solves the paper's objective (scikit-learn's scaling: ``l1`` = DictionaryLearning's
``alpha``) ``min 0.5 ||Z - V U||_F^2 + l1 ||V||_1`` s.t. ``V >= 0``, ``||u_k|| <= 1``, by block coordinate
descent, one pass over ``Z`` an iteration:

- V-step: HALS sweeps (exact coordinate descent, :mod:`~mmconcepts.decompose.nnls`) warm-started from the
  previous activations, from ``U Z^T`` and ``G = U U^T`` only; activations reach exact zeros;
- U-step: from ``A = V^T V`` and ``C = V^T Z``: ``U = A^-1 C`` with rows rescaled to unit norm, the scale moved
  into ``V`` (``l1 = 0``), or exact row updates projected onto the unit ball (``l1 > 0``; Mairal et al., 2010).

Everything is accumulated batch by batch, so data larger than memory streams from disk with the same
algorithm (:meth:`SemiNMF.fit_shards`); :meth:`SemiNMF.partial_fit` is the online variant (running ``A``,
``C`` with forgetting). Seeding: k-means++ and a few Lloyd steps on a random projection of a sample of the
rows. Stops when the objective's relative change falls under ``tol``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from mmconcepts.decompose.base import (ConceptDictionary, as_tensor, check_choice, check_float, check_int,
                                       check_n_concepts, code_stats, resolve_device)
from mmconcepts.decompose.kmeans import kmeans_plusplus, lloyd
from mmconcepts.decompose.nnls import hals_sweeps, least_squares_start, nnls, objective_rows
from mmconcepts.errors import MMConceptsError

_INIT_ROWS = 100  # rows per concept used to seed the concepts (at least 2,000)
_LLOYD_ITERS = 5  # Lloyd steps after k-means++ (init="kmeans")
_PROJ_DIM = 128  # seeding works on a random projection of the rows to this many dimensions (at least 4K)
_CHUNK = 1 << 23  # elements per block when computing exact residuals


def _changed() -> MMConceptsError:
    return MMConceptsError("the shards changed between passes: pass a function that yields the same shards")


class SemiNMF(ConceptDictionary):
    """Semi-NMF / non-negative sparse dictionary learning with HALS activations (exact zeros).

    Parameters
    ----------
    n_concepts : int
        Number of concepts ``K`` (the paper uses 20).
    l1 : float
        Weight of the L1 penalty on the activations (0: plain Semi-NMF). Needs ``normalize_concepts``.
    normalize_concepts : bool
        Concepts of unit norm (``l1 > 0``: constrained to norm <= 1, as in the paper).
    init : {"kmeans", "kmeans++", "random"}
        Seeding of the concepts: k-means++ rows followed by Lloyd steps, k-means++ rows, or random rows.
    max_iter : int
        Maximum outer iterations (passes over the data).
    tol : float
        Stop when the objective improves by less than ``tol`` (relative) in one iteration.
    max_inner : int or None
        Maximum HALS sweeps on the activations per iteration (None: 3 on the CPU, 10 on CUDA).
    forgetting : float
        Online (``partial_fit``) only: the statistics of batch ``s`` weigh ``(s / t) ** forgetting`` at step ``t``.
    batch_size : int or None
        ``fit`` processes this many rows at a time (None: all at once).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    seed : int
        Seed of the ``torch.Generator``: the same seed gives the same concepts, bit for bit on the CPU.

    Attributes
    ----------
    components_ : (K, D) float32 tensor
        Concepts, one a row.
    n_iter_ : int
        Iterations run (``partial_fit``: batches seen).
    reconstruction_err_ : float
        ``||Z - V U|| / ||Z||`` on the training data (``partial_fit``: on the last batch).
    objective_ : float
        Final ``0.5 ||Z - VU||^2 + l1 ||V||_1``.
    sparsity_ : float
        Fraction of training activations that are <= 1% of their sample's largest.
    loss_curve_, time_curve_ : list of float
        Relative error after each iteration's V-step, and seconds since ``fit`` was called (seeding
        included); not saved.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(200, 4) @ torch.randn(4, 32)
    >>> model = SemiNMF(n_concepts=4, seed=0).fit(Z)
    >>> V = model.transform(Z)
    >>> bool((V >= 0).all()), model.components_.shape
    (True, torch.Size([4, 32]))
    """

    method = "semi-nmf"
    _fitted_scalars = ConceptDictionary._fitted_scalars + ("objective_", "sparsity_")
    _nonnegative_input = False

    def __init__(self, n_concepts: int = 20, *, l1: float = 0.0, normalize_concepts: bool = True,
                 init: str = "kmeans", max_iter: int = 200, tol: float = 1e-4, max_inner: int | None = None,
                 forgetting: float = 1.0, batch_size: int | None = None, device: str = "cpu", seed: int = 0):
        self.n_concepts = check_int("n_concepts", n_concepts)
        self.l1 = check_float("l1", l1)
        if not isinstance(normalize_concepts, bool):
            raise MMConceptsError(f"normalize_concepts must be true or false, got {normalize_concepts!r}")
        if self.l1 > 0 and not normalize_concepts:
            raise MMConceptsError("l1 > 0 needs normalize_concepts=True (otherwise the concepts grow without "
                                  "bound and the activations shrink to 0)")
        self.normalize_concepts = normalize_concepts
        self.init = check_choice("init", init, ("kmeans", "kmeans++", "random"))
        self.max_iter = check_int("max_iter", max_iter)
        self.tol = check_float("tol", tol)
        self.max_inner = None if max_inner is None else check_int("max_inner", max_inner)
        self.forgetting = check_float("forgetting", forgetting)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size)
        self.device = device
        resolve_device(device)
        self.seed = check_int("seed", seed, 0)

    def _batch(self, Zb: Any, n_features: int | None) -> torch.Tensor:
        return as_tensor(Zb, "Z", n_features=n_features, device=self._device, nonnegative=self._nonnegative_input)

    def _init_components(self, Z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Seed concepts on a sample of rows: k-means++ (+ Lloyd for "kmeans") on a random projection of the
        rows to ``max(128, 4K)`` dimensions when ``D`` is larger, centroids then averaged in full dimension."""
        K = self.n_concepts
        rows = max(2000, _INIT_ROWS * K)
        if Z.shape[0] > rows:
            Z = Z[torch.randperm(Z.shape[0], generator=gen)[:rows].sort().values.to(Z.device)]
        check_n_concepts(K, Z.shape[0])
        if self.init == "random":
            return self._normalize(Z[torch.randperm(Z.shape[0], generator=gen)[:K].to(Z.device)].clone())[0]
        r = max(_PROJ_DIM, 4 * K)
        Y = Z @ (torch.randn(Z.shape[1], r, generator=gen) / r ** 0.5).to(Z.device) if Z.shape[1] > 2 * r else Z
        idx = kmeans_plusplus(Y, K, gen).to(Z.device)
        U = Z[idx].clone()
        if self.init == "kmeans":
            _, labels, _ = lloyd(Y, Y[idx].clone(), max_iter=_LLOYD_ITERS, tol=1e-3)
            onehot = torch.nn.functional.one_hot(labels, K).to(Z.dtype)
            counts = onehot.sum(0)
            U = torch.where((counts > 0)[:, None], (onehot.t() @ Z) / counts.clamp_min(1.0)[:, None], U)
        return self._normalize(U)[0]

    def _normalize(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows rescaled to unit norm (zero rows left alone); returns the norms used."""
        if not self.normalize_concepts:
            return U, None
        norms = torch.linalg.vector_norm(U, dim=1)
        norms = torch.where(norms > 0, norms, torch.ones_like(norms))
        return U / norms[:, None], norms

    def _components_step(self, U: torch.Tensor, A: torch.Tensor, C: torch.Tensor,
                         spare: Callable[[], torch.Tensor] | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New concepts from ``A = V^T V`` (float64) and ``C = V^T Z``; returns ``(U, scale)`` where ``scale``
        (or None) multiplies the activations of each concept so that ``V U`` is unchanged."""
        diag = A.diagonal()
        live = diag > 1e-12 * float(diag.max().clamp_min(1e-300))
        if self.l1 > 0:  # block coordinate descent with projection onto the unit ball: monotone
            U = U.clone()
            Af = A.to(U.dtype)
            for _ in range(3):
                for k in live.nonzero().flatten().tolist():
                    u = U[k] + (C[k] - Af[k] @ U) / Af[k, k]
                    U[k] = u / torch.linalg.vector_norm(u).clamp_min(1.0)
            scale = None
        else:
            U = torch.zeros_like(U)
            idx = live.nonzero().flatten()
            if len(idx):
                Al = A[idx][:, idx]
                ridge = 1e-10 * float(Al.diagonal().mean())
                sol = torch.linalg.solve(Al + ridge * torch.eye(len(idx), dtype=A.dtype, device=A.device),
                                         C[idx].double())
                U[idx] = sol.to(U.dtype)
            U, scale = self._normalize(U)
        dead = (~live).nonzero().flatten().tolist()
        if dead and spare is not None:  # a concept no sample uses: restart it on a badly explained sample
            rows = self._normalize(spare()[: len(dead)])[0]
            U[dead[: len(rows)]] = rows
            if scale is not None:
                scale[dead[: len(rows)]] = 0.0
        return U, scale

    def _run(self, batches: Callable[[], Iterable[Any]], U: torch.Tensor, max_iter: int,
             n_features: int, checked: bool = False, start: float | None = None) -> tuple[torch.Tensor, list]:
        """Alternate V-steps and U-steps, one pass over ``batches()`` per iteration (the first pass checks
        the batches unless ``checked``)."""
        K, prev = U.shape[0], None
        inner = self.max_inner or (10 if U.is_cuda else 3)  # sweeps are nearly free when fused on CUDA
        self.loss_curve_, self.time_curve_ = [], []
        start = time.perf_counter() if start is None else start
        n_iter = 0
        states: list = []
        for n_iter in range(1, max_iter + 1):
            G = U @ U.t()
            A = torch.zeros(K, K, dtype=torch.float64, device=U.device)
            C = torch.zeros_like(U)
            err, total, l1sum = (torch.zeros((), dtype=torch.float64, device=U.device) for _ in range(3))
            first_pass = n_iter == 1
            b = -1
            for b, Zb in enumerate(batches()):
                if first_pass and not checked:
                    Zb = self._batch(Zb, n_features)
                else:
                    Zb = Zb.to(self._device, torch.float32)
                Bt = U @ Zb.t()
                if first_pass:
                    row_sq = Zb.square().sum(1)
                    Vt = least_squares_start(Bt, G, self.l1)
                    states.append([Vt, row_sq])
                    sweeps = max(inner, 20)
                else:
                    if b >= len(states) or states[b][0].shape[1] != Zb.shape[0]:
                        raise _changed()
                    Vt, row_sq = states[b]
                    sweeps = inner
                hals_sweeps(Vt, Bt, G, l1=self.l1, max_sweeps=sweeps, tol=0.01)
                A += (Vt @ Vt.t()).double()
                C.addmm_(Vt, Zb)
                # ||Z - VU||^2 = sum ||z||^2 - 2 <V, Z U^T> + <V^T V, U U^T>: no extra pass over Z
                sq = row_sq.sum(dtype=torch.float64)
                err, total = err + sq - 2.0 * (Vt * Bt).sum(dtype=torch.float64), total + sq
                l1sum += Vt.sum(dtype=torch.float64)
            if b < 0:
                raise MMConceptsError("no data to fit on: check the feature store and layer")
            if len(states) != b + 1:
                raise _changed()
            err = (err + (A * G.double()).sum()).clamp_min(0.0)
            obj = float(0.5 * err + self.l1 * l1sum)
            self.loss_curve_.append(float((err / total.clamp_min(1e-300)).sqrt()))
            U, scale = self._components_step(U, A, C, lambda: self._worst_rows(batches, U, G, states))
            if scale is not None:
                for state in states:
                    state[0].mul_(scale[:, None])
            self.time_curve_.append(time.perf_counter() - start)
            if prev is not None:
                change = prev - obj
                if abs(change) <= self.tol * abs(prev) or abs(change) <= 1e-7 * 0.5 * float(total):
                    break
            prev = obj
        self.n_iter_ = n_iter
        return U, states

    def _worst_rows(self, batches: Callable[[], Iterable[Any]], U: torch.Tensor, G: torch.Tensor,
                    states: list) -> torch.Tensor:
        """The ``K`` samples worst explained (one extra pass; only needed to restart an unused concept)."""
        K = U.shape[0]
        rows, errs = [], []
        for b, Zb in enumerate(batches()):
            Zb = Zb.to(self._device, torch.float32)
            Vt, row_sq = states[b]
            res = objective_rows(Vt, U @ Zb.t(), G, row_sq)
            worst = torch.topk(res, min(K, res.shape[0])).indices
            rows.append(Zb[worst])
            errs.append(res[worst])
        return torch.cat(rows)[torch.argsort(torch.cat(errs), descending=True, stable=True)[:K]]

    def _finish(self, batches: Callable[[], Iterable[Any]], U: torch.Tensor, states: list,
                keep_codes: bool) -> torch.Tensor | None:
        """Converge the activations for the final concepts; set the exact error, objective and sparsity."""
        G = U @ U.t()
        err = total = l1sum = 0.0
        codes = []
        for b, Zb in enumerate(batches()):
            Zb = Zb.to(self._device, torch.float32)
            Vt = states[b][0]
            hals_sweeps(Vt, U @ Zb.t(), G, l1=self.l1, max_sweeps=200, tol=1e-4)
            step = max(256, _CHUNK // Zb.shape[1])
            for s in range(0, Zb.shape[0], step):
                R = torch.addmm(Zb[s:s + step], Vt[:, s:s + step].t(), U, alpha=-1.0)
                err += float(torch.linalg.vector_norm(R, dim=1).double().square().sum())
            total += float(states[b][1].sum(dtype=torch.float64))
            l1sum += float(Vt.sum(dtype=torch.float64))
            codes.append(Vt.t().contiguous())
        V = torch.cat(codes)
        self.components_ = U.cpu()
        self.n_features_in_ = int(U.shape[1])
        self.reconstruction_err_ = (err / max(total, 1e-300)) ** 0.5
        self.objective_ = 0.5 * err + self.l1 * l1sum
        self.sparsity_ = code_stats(V)["sparsity"]
        return V if keep_codes else None

    def fit(self, Z: Any, init_components: Any = None) -> SemiNMF:
        """Learn the concepts of ``Z`` (``N x D``); ``init_components`` (``K x D``) replaces the seeding."""
        self._fit(Z, init_components, keep_codes=False)
        return self

    def fit_transform(self, Z: Any, init_components: Any = None) -> torch.Tensor:
        """Fit, and return the training activations (``N x K``, >= 0), converged for the final concepts."""
        out = Z.device if isinstance(Z, torch.Tensor) else torch.device("cpu")
        return self._fit(Z, init_components, keep_codes=True).to(out)

    def _fit(self, Z: Any, init_components: Any, keep_codes: bool) -> torch.Tensor | None:
        start = time.perf_counter()
        Z = self._batch(Z, None)
        check_n_concepts(self.n_concepts, Z.shape[0])
        if init_components is None:
            U = self._init_components(Z, torch.Generator().manual_seed(self.seed))
        else:
            U = as_tensor(init_components, "init_components", n_features=Z.shape[1], device=self._device)
            if U.shape[0] != self.n_concepts:
                raise MMConceptsError(f"init_components has {U.shape[0]} rows, expected {self.n_concepts}")
            U = self._normalize(U.clone())[0]
        step = self.batch_size or Z.shape[0]
        batches = lambda: (Z[s:s + step] for s in range(0, Z.shape[0], step))  # noqa: E731
        U, states = self._run(batches, U, self.max_iter, Z.shape[1], checked=True, start=start)
        return self._finish(batches, U, states, keep_codes)

    def transform(self, Z: Any) -> torch.Tensor:
        """Activations of new samples for the fixed concepts: batched non-negative lasso (exact zeros)."""
        self._check_fitted()
        Z, out = self._input(Z)
        return nnls(Z, self.components_.to(Z.device), l1=self.l1).to(out)

    def partial_fit(self, Z: Any) -> SemiNMF:
        """Update the concepts with one batch (online dictionary learning with running statistics).

        Continues from the current concepts when fitted (or loaded), else seeds them from this batch.
        """
        fitted = getattr(self, "components_", None) is not None
        Z = self._batch(Z, self.n_features_in_ if fitted else None)
        if not hasattr(self, "_stats"):
            if fitted:
                U = self.components_.to(self._device)
            else:
                check_n_concepts(self.n_concepts, Z.shape[0])
                U = self._init_components(Z, torch.Generator().manual_seed(self.seed))
            K = self.n_concepts
            self._stats = [torch.zeros(K, K, dtype=torch.float64, device=U.device), torch.zeros_like(U), U, 0]
            self.n_features_in_ = int(Z.shape[1])
        A, C, U, t = self._stats
        G, Bt, row_sq = U @ U.t(), U @ Z.t(), Z.square().sum(1)
        Vt = least_squares_start(Bt, G, self.l1)
        hals_sweeps(Vt, Bt, G, l1=self.l1, max_sweeps=100, tol=1e-3)
        t += 1
        beta = (1.0 - 1.0 / t) ** self.forgetting
        A = beta * A + (Vt @ Vt.t()).double()
        C = beta * C + Vt @ Z
        res = objective_rows(Vt, Bt, G, row_sq)
        worst = lambda: Z[torch.topk(res, min(self.n_concepts, Z.shape[0])).indices]  # noqa: E731
        U, scale = self._components_step(U, A, C, worst)
        if scale is not None:  # keep the statistics consistent with the rescaled concepts
            A = A * scale.double()[:, None] * scale.double()[None, :]
            C = C * scale[:, None]
        self._stats = [A, C, U, t]
        self.components_, self.n_iter_ = U.cpu(), t
        err = float(res.sum(dtype=torch.float64))
        self.reconstruction_err_ = (err / max(float(row_sq.sum(dtype=torch.float64)), 1e-300)) ** 0.5
        self.objective_ = 0.5 * err + self.l1 * float(Vt.sum(dtype=torch.float64))
        self.sparsity_ = code_stats(Vt.t())["sparsity"]
        return self

    def fit_shards(self, shards: Callable[[], Iterable[Any]] | Iterable[Any], n_epochs: int | None = None
                   ) -> SemiNMF:
        """Fit on data given shard by shard (e.g. ``lambda: iter_feature_shards(store, layer)``).

        One online pass (:meth:`partial_fit`) finds good concepts, then full passes run the algorithm of
        :meth:`fit` (same result). Only the activations (``N x K``) stay in memory, never the features.
        ``shards``: a function returning a fresh iterator, or a list; ``n_epochs`` defaults to ``max_iter``.
        """
        self._fit_shards(shards, n_epochs, keep_codes=False)
        return self

    def fit_transform_shards(self, shards, n_epochs: int | None = None) -> torch.Tensor:
        """:meth:`fit_shards`, returning the training activations (``N x K``, on the CPU)."""
        return self._fit_shards(shards, n_epochs, keep_codes=True).cpu()

    def _fit_shards(self, shards, n_epochs, keep_codes):
        if callable(shards):
            batches = shards
        elif iter(shards) is shards:
            raise MMConceptsError("fit_shards needs a list of tensors or a function returning a fresh iterator "
                                  "(a generator can be read only once)")
        else:
            def batches():
                return iter(shards)
        n_epochs = self.max_iter if n_epochs is None else check_int("n_epochs", n_epochs)
        start = time.perf_counter()
        for name in ("_stats", "components_"):
            self.__dict__.pop(name, None)
        for Zb in batches():
            self.partial_fit(Zb)
        if not hasattr(self, "_stats"):
            raise MMConceptsError("no shards to fit on: check the feature store and layer")
        U = self._stats[2]
        del self._stats
        U, states = self._run(batches, U, n_epochs, self.n_features_in_, start=start)
        return self._finish(batches, U, states, keep_codes)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        if self.components_.shape[0] != self.n_concepts:
            raise MMConceptsError("components_ does not match n_concepts")
