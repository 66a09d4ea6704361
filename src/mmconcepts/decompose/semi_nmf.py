"""Semi-NMF concept dictionary: ``Z ~ V U`` with activations ``V >= 0`` and free concepts ``U``.

With ``l1 > 0`` it solves the paper's objective (in scikit-learn's scaling, so ``l1`` = DictionaryLearning's
``alpha``)::

    min_{V >= 0, ||u_k|| <= 1}  0.5 ||Z - V U||_F^2 + l1 ||V||_1

by block coordinate descent, each iteration one pass over ``Z``:

- V-step: a few HALS sweeps (exact coordinate descent, :mod:`mmconcepts.decompose.nnls`) warm-started
  from the previous activations, needing only ``U Z^T`` and ``G = U U^T``; activations reach exact zeros;
- U-step: from ``A = V^T V`` and ``C = V^T Z``: least squares ``U = A^-1 C`` then rows rescaled to unit norm
  with the scale moved into ``V`` (``l1 = 0``: the objective is unchanged), or, with ``l1 > 0``, exact
  block-coordinate updates of each row projected onto the unit ball (Mairal et al., 2010).

``U Z^T``, ``V^T Z`` and the squared error of each sample are computed batch by batch while the batch is at
hand, so data larger than memory streams from disk (:meth:`SemiNMF.fit_shards`): the streamed fit is the
same algorithm. :meth:`SemiNMF.partial_fit` is the online variant (Mairal et al., 2010: running
statistics ``A``, ``B`` with forgetting). Initialisation: k-means++ seeding plus a few Lloyd steps on
(a sample of) the rows, which starts close to a good solution. Stops when the objective's relative change
falls under ``tol``.
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
_CHUNK = 8192  # rows per block when computing exact residuals


def _changed() -> MMConceptsError:
    return MMConceptsError("the shards changed between passes (a different number of shards): pass a function "
                           "that yields the same shards each time")


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
    max_inner : int
        Maximum HALS sweeps on the activations per iteration.
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
    _nonnegative_components = False

    def __init__(self, n_concepts: int = 20, *, l1: float = 0.0, normalize_concepts: bool = True,
                 init: str = "kmeans", max_iter: int = 200, tol: float = 1e-4, max_inner: int = 10,
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
        self.max_inner = check_int("max_inner", max_inner)
        self.forgetting = check_float("forgetting", forgetting)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size)
        self.device = device
        resolve_device(device)
        self.seed = check_int("seed", seed, 0)

    # ------------------------------------------------------------------------------- building blocks
    def _batch(self, Zb: Any, n_features: int | None) -> torch.Tensor:
        return as_tensor(Zb, "Z", n_features=n_features, device=self._device, nonnegative=self._nonnegative_input)

    def _init_components(self, Z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        rows = max(2000, _INIT_ROWS * self.n_concepts)
        if Z.shape[0] > rows:
            Z = Z[torch.randperm(Z.shape[0], generator=gen)[:rows].sort().values.to(Z.device)]
        check_n_concepts(self.n_concepts, Z.shape[0])
        if self.init == "random":
            idx = torch.randperm(Z.shape[0], generator=gen)[: self.n_concepts]
        else:
            idx = kmeans_plusplus(Z, self.n_concepts, gen)
        U = Z[idx.to(Z.device)].clone()
        if self.init == "kmeans":
            U, _, _ = lloyd(Z, U, max_iter=_LLOYD_ITERS, tol=1e-3)
        return self._normalize(U)[0]

    def _normalize(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows rescaled to unit norm (zero rows left alone); returns the norms used."""
        if not self.normalize_concepts:
            return U, None
        norms = torch.linalg.vector_norm(U, dim=1)
        norms = torch.where(norms > 0, norms, torch.ones_like(norms))
        return U / norms[:, None], norms

    def _components_step(self, U: torch.Tensor, A: torch.Tensor, C: torch.Tensor, spare: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New concepts from ``A = V^T V`` (float64) and ``C = V^T Z``; returns ``(U, scale)`` where ``scale``
        (or None) multiplies the activations of each concept so that ``V U`` is unchanged."""
        K = A.shape[0]
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
            rows = self._normalize(spare[: len(dead)])[0]
            U[dead[: len(rows)]] = rows
            if scale is not None:
                scale[dead[: len(rows)]] = 0.0
        return U, scale

    # ----------------------------------------------------------------------------------- main loop
    def _run(self, batches: Callable[[], Iterable[Any]], U: torch.Tensor, max_iter: int,
             n_features: int, checked: bool = False, start: float | None = None) -> tuple[torch.Tensor, list]:
        """Alternate V-steps and U-steps, one pass over ``batches()`` per iteration (the first pass checks
        the batches unless ``checked``)."""
        K = U.shape[0]
        prev = None
        self.loss_curve_, self.time_curve_ = [], []
        start = time.perf_counter() if start is None else start
        n_iter = 0
        states: list = []
        for n_iter in range(1, max_iter + 1):
            G = U @ U.t()
            A = torch.zeros(K, K, dtype=torch.float64, device=U.device)
            C = torch.zeros_like(U)
            err = torch.zeros((), dtype=torch.float64, device=U.device)
            total = torch.zeros((), dtype=torch.float64, device=U.device)
            l1sum = torch.zeros((), dtype=torch.float64, device=U.device)
            spare_rows, spare_err = [], []
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
                    sweeps = max(self.max_inner, 20)
                else:
                    if b >= len(states):
                        raise _changed()
                    Vt, row_sq = states[b]
                    if Vt.shape[1] != Zb.shape[0]:
                        raise _changed()
                    sweeps = self.max_inner
                hals_sweeps(Vt, Bt, G, l1=self.l1, max_sweeps=sweeps, tol=0.01)
                A += (Vt @ Vt.t()).double()
                C.addmm_(Vt, Zb)
                res = objective_rows(Vt, Bt, G, row_sq)
                err += res.double().sum()
                total += row_sq.double().sum()
                l1sum += Vt.double().sum()
                worst = torch.topk(res, min(K, res.shape[0])).indices
                spare_rows.append(Zb[worst])
                spare_err.append(res[worst])
            if b < 0:
                raise MMConceptsError("no data to fit on: check the feature store and layer")
            if len(states) != b + 1:
                raise _changed()
            obj = float(0.5 * err + self.l1 * l1sum)
            self.loss_curve_.append(float((err / total.clamp_min(1e-300)).sqrt()))
            spare = torch.cat(spare_rows)[torch.argsort(torch.cat(spare_err), descending=True, stable=True)[:K]]
            U, scale = self._components_step(U, A, C, spare)
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
            for s in range(0, Zb.shape[0], _CHUNK):
                Zc = Zb[s:s + _CHUNK]
                err += float(torch.addmm(Zc, Vt[:, s:s + _CHUNK].t(), U, alpha=-1.0).double().square().sum())
                total += float(Zc.double().square().sum())
            l1sum += float(Vt.double().sum())
            codes.append(Vt.t().contiguous())
        V = torch.cat(codes)
        self.components_ = U.cpu()
        self.n_features_in_ = int(U.shape[1])
        self.reconstruction_err_ = (err / max(total, 1e-300)) ** 0.5
        self.objective_ = 0.5 * err + self.l1 * l1sum
        self.sparsity_ = code_stats(V)["sparsity"]
        return V if keep_codes else None

    # --------------------------------------------------------------------------------- public API
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
        U = self._start(Z, init_components)
        step = self.batch_size or Z.shape[0]

        def batches():
            return (Z[s:s + step] for s in range(0, Z.shape[0], step))

        U, states = self._run(batches, U, self.max_iter, Z.shape[1], checked=True, start=start)
        return self._finish(batches, U, states, keep_codes)

    def _start(self, Z: torch.Tensor, init_components: Any) -> torch.Tensor:
        if init_components is None:
            return self._init_components(Z, torch.Generator().manual_seed(self.seed))
        U = as_tensor(init_components, "init_components", n_features=Z.shape[1], device=self._device)
        if U.shape[0] != self.n_concepts:
            raise MMConceptsError(f"init_components has {U.shape[0]} rows, expected n_concepts={self.n_concepts}")
        return self._normalize(U.clone())[0]

    def transform(self, Z: Any) -> torch.Tensor:
        """Activations of new samples for the fixed concepts: batched non-negative lasso (exact zeros)."""
        self._check_fitted()
        Z, out = self._input(Z)
        return nnls(Z, self.components_.to(Z.device), l1=self.l1).to(out)

    def partial_fit(self, Z: Any) -> SemiNMF:
        """Update the concepts with one batch (online dictionary learning with running statistics)."""
        n_features = getattr(self, "n_features_in_", None) if hasattr(self, "_stats") else None
        Z = self._batch(Z, n_features)
        if not hasattr(self, "_stats"):
            check_n_concepts(self.n_concepts, Z.shape[0])
            self._gen = torch.Generator().manual_seed(self.seed)
            U = self._init_components(Z, self._gen)
            self._stats = [torch.zeros(self.n_concepts, self.n_concepts, dtype=torch.float64, device=U.device),
                           torch.zeros_like(U), U, 0]
            self.n_features_in_ = int(Z.shape[1])
        A, C, U, t = self._stats
        A, C, U = A.to(self._device), C.to(self._device), U.to(self._device)
        G = U @ U.t()
        Bt = U @ Z.t()
        Vt = least_squares_start(Bt, G, self.l1)
        hals_sweeps(Vt, Bt, G, l1=self.l1, max_sweeps=100, tol=1e-3)
        t += 1
        beta = (1.0 - 1.0 / t) ** self.forgetting
        A = beta * A + (Vt @ Vt.t()).double()
        C = beta * C + Vt @ Z
        res = objective_rows(Vt, Bt, G, Z.square().sum(1))
        spare = Z[torch.topk(res, min(self.n_concepts, Z.shape[0])).indices]
        U, scale = self._components_step(U, A, C, spare)
        if scale is not None:  # keep the statistics consistent with the rescaled concepts
            A = A * scale.double()[:, None] * scale.double()[None, :]
            C = C * scale[:, None]
        self._stats = [A, C, U, t]
        self.components_ = U.cpu()
        self.n_iter_ = t
        self.reconstruction_err_ = float((res.double().sum() / Z.double().square().sum().clamp_min(1e-300)).sqrt())
        self.objective_ = float(0.5 * res.double().sum() + self.l1 * Vt.double().sum())
        self.sparsity_ = code_stats(Vt.t())["sparsity"]
        return self

    def fit_shards(self, shards: Callable[[], Iterable[Any]] | Iterable[Any], n_epochs: int | None = None
                   ) -> SemiNMF:
        """Fit on data given shard by shard (e.g. ``lambda: iter_feature_shards(store, layer)``).

        One online pass (:meth:`partial_fit`) finds good concepts, then full passes run the same algorithm
        as :meth:`fit` (the result matches the full-batch fit). Only the activations (``N x K``) are kept in
        memory, never the features. ``shards`` is a function returning a fresh iterator, or a list.
        """
        self._fit_shards(shards, n_epochs, keep_codes=False)
        return self

    def fit_transform_shards(self, shards: Callable[[], Iterable[Any]] | Iterable[Any],
                             n_epochs: int | None = None) -> torch.Tensor:
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
