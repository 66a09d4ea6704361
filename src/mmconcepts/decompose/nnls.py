"""Batched non-negative least squares / non-negative lasso in torch, with exact zeros.

For a fixed dictionary ``U`` (``K x D``) every sample ``z`` gets the activations

    v = argmin_{v >= 0} 0.5 ||z - v U||^2 + l1 * sum(v)

(the scikit-learn convention: ``l1`` plays the role of DictionaryLearning's ``alpha``). All samples are
solved at once by HALS, i.e. exact coordinate descent: for each concept ``k`` in turn,

    v_k <- max(0, v_k + (b_k - l1 - (v G)_k) / G_kk),   b = z U^T,  G = U U^T,

which clamps at zero, so inactive concepts get activations that are exactly 0 (unlike multiplicative
updates, which only shrink them). Only ``K x K`` and ``N x K`` quantities are touched after the single
product ``U Z^T``, so encoding costs one pass over ``Z``.

Activations are kept transposed (``K x N``, one contiguous row a concept) so each coordinate update is a
contiguous vector operation.

Kept as our own code because it is measurably faster than the library alternative at the same answer:
encoding ``Z`` 5,000 x 1,024 on ``K = 20`` concepts (the benchmark's synthetic data, 2 shared CPU cores)
takes 7 ms (``l1 = 0``) / 6 ms (``l1 = 0.01``) against 0.22 s / 0.20 s for scikit-learn's
``sparse_encode(algorithm="lasso_cd", positive=True)``, about 30 times faster, with the same objective to
7 significant digits.
"""

from __future__ import annotations

import os
import warnings

import torch

from mmconcepts.errors import MMConceptsError


_FUSED: dict = {}  # the Triton kernel module once imported, or None when unavailable / failed
_GROUP = 8  # fused sweeps per launch when a stopping tolerance is checked between launches


def _fused_kernel(Vt: torch.Tensor):
    """The fused CUDA kernel module when it applies to ``Vt``, else None."""
    if not Vt.is_cuda or os.environ.get("MMCONCEPTS_NO_TRITON"):
        return None
    if "module" not in _FUSED:
        try:
            from mmconcepts.decompose import _hals_triton
        except Exception:  # no triton: the torch path is used
            _hals_triton = None
        _FUSED["module"] = _hals_triton
    mod = _FUSED["module"]
    if mod is None or Vt.shape[0] > mod.MAX_K or Vt.numel() >= 2**31 or not Vt.is_contiguous():
        return None
    return mod


def _sweeps_fused(mod, Vt, Bt, G, l1, max_sweeps, tol) -> int | None:
    try:
        if tol <= 0 or max_sweeps <= _GROUP:
            mod.hals_sweeps_fused(Vt, Bt, G, l1, max_sweeps)
            return max_sweeps
        done, first = 0, None
        while done < max_sweeps:
            n = min(_GROUP, max_sweeps - done)
            before = Vt.clone()
            mod.hals_sweeps_fused(Vt, Bt, G, l1, n)
            done += n
            delta = float(torch.linalg.vector_norm(Vt - before))
            first = delta if first is None else first
            if delta <= tol * first or delta == 0.0:
                break
        return done
    except Exception as exc:  # a kernel that does not compile here: fall back to torch for good
        warnings.warn(f"fused HALS kernel unavailable ({type(exc).__name__}: {exc}); using the torch path")
        _FUSED["module"] = None
        return None


def hals_sweeps(Vt: torch.Tensor, Bt: torch.Tensor, G: torch.Tensor, *, l1: float = 0.0, max_sweeps: int = 10,
                tol: float = 0.0) -> int:
    """Run HALS sweeps on ``Vt`` in place; return how many were run.

    Parameters
    ----------
    Vt : (K, N) tensor
        Current activations, transposed, non-negative; updated in place.
    Bt : (K, N) tensor
        ``U @ Z.T``.
    G : (K, K) tensor
        ``U @ U.T``.
    l1 : float
        Weight of the L1 penalty on the activations.
    max_sweeps : int
        At most this many sweeps over the ``K`` coordinates.
    tol : float
        Stop once a sweep changes ``Vt`` by at most ``tol`` times the change of the first sweep
        (Frobenius norms; the rule of Gillis & Glineur, 2012). ``0`` runs all ``max_sweeps``.

    On CUDA (``K <= 64``) the sweeps run fused in a Triton kernel (:mod:`._hals_triton`), checked against
    ``tol`` every 8 sweeps; set ``MMCONCEPTS_NO_TRITON=1`` to use the torch path everywhere.
    """
    mod = _fused_kernel(Vt)
    if mod is not None:
        done = _sweeps_fused(mod, Vt, Bt, G, l1, max_sweeps, tol)
        if done is not None:
            return done
    K = Vt.shape[0]
    diag = G.diagonal().tolist()
    Bl = Bt - l1 if l1 else Bt
    Gv = G.to(Vt.dtype)
    first = None
    for sweep in range(1, max_sweeps + 1):
        before = Vt.clone() if tol > 0 else None
        for k in range(K):
            if diag[k] <= 0.0:  # a null concept: no activation can use it
                Vt[k].zero_()
                continue
            num = torch.addmv(Bl[k], Vt.t(), Gv[k], alpha=-1.0)
            Vt[k].add_(num, alpha=1.0 / diag[k]).clamp_(min=0.0)
        if before is not None:
            delta = float(torch.linalg.vector_norm(Vt - before))
            if first is None:
                first = delta
            if delta <= tol * first or delta == 0.0:
                return sweep
    return max_sweeps


def least_squares_start(Bt: torch.Tensor, G: torch.Tensor, l1: float = 0.0) -> torch.Tensor:
    """Clamped unconstrained solution ``max(0, G^-1 (B - l1))`` (``K x N``): a cheap, good starting point.

    When ``G`` is ill-conditioned (nearly parallel or opposite concepts) the clamped solution can be far
    worse than no activation at all; the HALS sweeps that follow still decrease the objective from it.
    """
    K = G.shape[0]
    G64 = G.double()
    ridge = 1e-10 * float(G64.diagonal().mean().clamp_min(1e-30))
    rhs = (Bt - l1) if l1 else Bt
    sol = torch.linalg.solve(G64 + ridge * torch.eye(K, dtype=G64.dtype, device=G64.device), rhs.double())
    return sol.to(Bt.dtype).clamp_(min=0.0).contiguous()


def objective_rows(Vt: torch.Tensor, Bt: torch.Tensor, G: torch.Tensor, row_sq: torch.Tensor) -> torch.Tensor:
    """Squared reconstruction error of each sample, ``||z - v U||^2``, from ``Bt``, ``G`` and ``||z||^2``.

    Exact up to float32 cancellation (relative to ``||z||^2``); clamped at 0.
    """
    VG = G.to(Vt.dtype) @ Vt
    return (row_sq - 2.0 * (Vt * Bt).sum(0) + (Vt * VG).sum(0)).clamp_min(0.0)


def nnls(Z: torch.Tensor, U: torch.Tensor, *, l1: float = 0.0, max_sweeps: int = 500, tol: float = 1e-5,
         batch_size: int = 65536) -> torch.Tensor:
    """Non-negative (lasso) codes of the rows of ``Z`` on the dictionary ``U``.

    Parameters
    ----------
    Z : (N, D) float32 tensor
    U : (K, D) float32 tensor, on the same device as ``Z``.
    l1 : float
        L1 weight (0: plain non-negative least squares).
    max_sweeps, tol : see :func:`hals_sweeps`; ``tol`` here is relative to the first sweep's change.
    batch_size : rows solved together (bounds the ``K x batch`` work tensors).

    Returns
    -------
    V : (N, K) float32 tensor, ``V >= 0`` with exact zeros.

    Examples
    --------
    >>> import torch
    >>> U = torch.eye(3, 5)
    >>> nnls(torch.tensor([[1.0, -2.0, 0.5, 0.0, 0.0]]), U)
    tensor([[1.0000, 0.0000, 0.5000]])
    """
    if Z.shape[1] != U.shape[1]:
        raise MMConceptsError(f"features have {Z.shape[1]} columns but the dictionary has {U.shape[1]}: use "
                              "features from the same model and layer")
    U = U.to(device=Z.device, dtype=torch.float32)
    G = U @ U.t()
    out = torch.empty(Z.shape[0], U.shape[0], dtype=torch.float32, device=Z.device)
    for start in range(0, Z.shape[0], batch_size):
        Bt = U @ Z[start:start + batch_size].t()
        Vt = least_squares_start(Bt, G, l1)
        hals_sweeps(Vt, Bt, G, l1=l1, max_sweeps=max_sweeps, tol=tol)
        out[start:start + batch_size] = Vt.t()
    return out
