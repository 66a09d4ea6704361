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
rows. Stops when the objective's relative change falls under ``tol``. The solver itself lives in
:mod:`~mmconcepts.decompose._solver`; the HALS sweeps in :mod:`~mmconcepts.decompose.nnls`.

``partial_fit`` contract (the same for every method that streams): it continues from the current fitted
state, whether that came from ``fit``, from earlier ``partial_fit`` calls or from :func:`load_dictionary`
(the running statistics are saved with the dictionary); ``fit`` and ``fit_shards`` start from scratch and
forget the running statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from mmconcepts.decompose._solver import BlockCoordinateSolver
from mmconcepts.decompose.base import ConceptDictionary
from mmconcepts.decompose.nnls import hals_sweeps, least_squares_start, nnls, objective_rows
from mmconcepts.decompose.validation import (as_tensor, check_bool, check_choice, check_float, check_int,
                                             check_n_concepts, code_stats, resolve_device)
from mmconcepts.errors import MMConceptsError


class SemiNMF(BlockCoordinateSolver, ConceptDictionary):
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
    n_features_in_ : int
        Number of features ``D``.
    n_iter_ : int
        Iterations run (``partial_fit``: batches seen since the last ``fit``).
    reconstruction_err_ : float
        ``||Z - V U|| / ||Z||`` on the training data (``partial_fit``: on the last batch).
    objective_ : float
        Final ``0.5 ||Z - VU||^2 + l1 ||V||_1``.
    sparsity_ : float
        Fraction of training activations that are <= 1% of their sample's largest.
    loss_curve_, objective_curve_, time_curve_ : list of float
        After each iteration's V-step: the relative error, the objective ``0.5 ||Z - VU||^2 + l1 ||V||_1``
        (non-increasing from one iteration to the next, up to float rounding; so is ``loss_curve_`` when
        ``l1 = 0``), and the seconds since ``fit`` was called (seeding included). Set by ``fit`` and
        ``fit_shards``; not saved.

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
    _state_tensors = ("_online_A", "_online_C")  # running V^T V (float64) and V^T Z of partial_fit
    _state_scalars = ("_online_steps",)

    def __init__(self, n_concepts: int = 20, *, l1: float = 0.0, normalize_concepts: bool = True,
                 init: str = "kmeans", max_iter: int = 200, tol: float = 1e-4, max_inner: int | None = None,
                 forgetting: float = 1.0, batch_size: int | None = None, device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.l1 = l1
        self.normalize_concepts = normalize_concepts
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.max_inner = max_inner
        self.forgetting = forgetting
        self.batch_size = batch_size
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        check_float("l1", self.l1)
        check_bool("normalize_concepts", self.normalize_concepts)
        if self.l1 > 0 and not self.normalize_concepts:
            raise MMConceptsError("l1 > 0 needs normalize_concepts=True (otherwise the concepts grow without "
                                  "bound and the activations shrink to 0)")
        check_choice("init", self.init, ("kmeans", "kmeans++", "random"))
        check_int("max_iter", self.max_iter)
        check_float("tol", self.tol)
        check_int("max_inner", self.max_inner, optional=True)
        check_float("forgetting", self.forgetting)
        check_int("batch_size", self.batch_size, optional=True)
        resolve_device(self.device)
        check_int("seed", self.seed, 0)

    def _batch(self, Zb: Any, n_features: int | None) -> torch.Tensor:
        return as_tensor(Zb, "Z", n_features=n_features, device=self._device, nonnegative=self._nonnegative_input,
                         owner=type(self).__name__)

    def _clear_online(self) -> None:
        for name in (*self._state_tensors, *self._state_scalars):
            self.__dict__.pop(name, None)

    # -- batch fitting
    def fit(self, Z: Any, y: None = None, *, init_components: Any = None) -> SemiNMF:
        """Learn the concepts of ``Z`` (``N x D``) from scratch.

        Parameters
        ----------
        Z : (N, D) tensor or array
        y : ignored
        init_components : (K, D) tensor or array, optional
            Starting concepts instead of the seeding.

        Returns
        -------
        self
        """
        self._fit(Z, init_components, keep_codes=False)
        return self

    def fit_transform(self, Z: Any, y: None = None, *, init_components: Any = None):
        """Fit, and return the training activations (``N x K``, >= 0), converged for the final concepts
        (a torch tensor for a torch tensor, else a NumPy array)."""
        V, like = self._fit(Z, init_components, keep_codes=True)
        return self._output(V, like)

    def _fit(self, Z: Any, init_components: Any, keep_codes: bool):
        start = time.perf_counter()
        Z, like = self._fit_input(Z)
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
        return self._finish(batches, U, states, keep_codes), like

    def _encode(self, Z: torch.Tensor) -> torch.Tensor:
        """Activations for the fixed concepts: batched non-negative lasso (exact zeros)."""
        return nnls(Z, self.components_.to(Z.device), l1=self.l1)

    # -- online fitting
    def partial_fit(self, Z: Any, y: None = None) -> SemiNMF:
        """Update the concepts with one batch (online dictionary learning with running statistics).

        Continues from the current state: the concepts of ``fit``, of earlier ``partial_fit`` calls or of a
        loaded dictionary, with the running statistics of the ``partial_fit`` calls since (saved and loaded
        with the dictionary). Unfitted, it seeds the concepts from this batch.

        Parameters
        ----------
        Z : (n, D) tensor or array
        y : ignored

        Returns
        -------
        self
        """
        fitted, Z = self._continuing(Z)
        if fitted:
            U = self.components_.to(self._device)
        else:
            check_n_concepts(self.n_concepts, Z.shape[0])
            U = self._init_components(Z, torch.Generator().manual_seed(self.seed))
            self.n_features_in_ = int(Z.shape[1])
        if hasattr(self, "_online_A"):
            A, C, t = self._online_A.to(U.device), self._online_C.to(U.device), int(self._online_steps)
        else:
            K = U.shape[0]
            A, C, t = torch.zeros(K, K, dtype=torch.float64, device=U.device), torch.zeros_like(U), 0
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
        self._online_A, self._online_C, self._online_steps = A, C, t
        self.components_, self.n_iter_ = U.cpu(), t
        err = float(res.sum(dtype=torch.float64))
        self.reconstruction_err_ = (err / max(float(row_sq.sum(dtype=torch.float64)), 1e-300)) ** 0.5
        self.objective_ = 0.5 * err + self.l1 * float(Vt.sum(dtype=torch.float64))
        self.sparsity_ = code_stats(Vt.t())["sparsity"]
        return self

    # -- streaming
    def fit_shards(self, shards: Callable[[], Iterable[Any]] | Iterable[Any], n_epochs: int | None = None
                   ) -> SemiNMF:
        """Fit from scratch on data given shard by shard (e.g. ``lambda: iter_feature_shards(store, layer)``).

        One online pass (:meth:`partial_fit`) finds good concepts, then full passes run the algorithm of
        :meth:`fit` (same result). Only the activations (``N x K``) stay in memory, never the features.

        Parameters
        ----------
        shards : callable returning a fresh iterator of (n, D) tensors, or a list of them
        n_epochs : int or None
            Full passes (default ``max_iter``).

        Returns
        -------
        self
        """
        self._fit_shards(shards, n_epochs, keep_codes=False)
        return self

    def fit_transform_shards(self, shards, n_epochs: int | None = None) -> torch.Tensor:
        """:meth:`fit_shards`, returning the training activations (``N x K`` torch tensor, on the CPU)."""
        return self._fit_shards(shards, n_epochs, keep_codes=True).cpu()

    def _fit_shards(self, shards, n_epochs, keep_codes):
        self._check_params()
        if callable(shards):
            batches = shards
        elif iter(shards) is shards:
            raise MMConceptsError("fit_shards needs a list of tensors or a function returning a fresh iterator "
                                  "(a generator can be read only once)")
        else:
            def batches():
                return iter(shards)
        n_epochs = self.max_iter if n_epochs is None else n_epochs
        check_int("n_epochs", n_epochs)
        start = time.perf_counter()
        self._clear_fitted()
        group = self._group
        if group.rank == 0:  # data-parallel: rank 0 seeds the concepts on its rows, the others receive them
            for Zb in batches():
                self.partial_fit(Zb)
            if not hasattr(self, "components_"):
                raise MMConceptsError("no shards to fit on: check the feature store and layer")
            U = self.components_.to(self._device)
        if group.world > 1:  # a rank may have no rows (more ranks than rows): the concepts' shape comes first
            shape = group.broadcast_(torch.tensor(U.shape if group.rank == 0 else (0, 0), dtype=torch.long))
            if group.rank != 0:
                U = torch.zeros(*shape.tolist(), device=self._device)
            U = group.broadcast_(U)
            self.n_features_in_ = int(U.shape[1])
        self._clear_online()
        U, states = self._run(batches, U, n_epochs, self.n_features_in_, start=start)
        return self._finish(batches, U, states, keep_codes)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        K, D = self.components_.shape
        if K != self.n_concepts:
            raise MMConceptsError("components_ does not match n_concepts")
        if self._has_state("online state") and (
                self._online_A.shape != (K, K) or self._online_C.shape != (K, D)
                or not isinstance(self._online_steps, int) or self._online_steps < 1):
            raise MMConceptsError("the online state does not match the concepts")
