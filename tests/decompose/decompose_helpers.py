"""Helpers for the decompose tests: planted dictionaries, concept matching, tiny feature stores."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from tests.fixtures.stores import make_store

__all__ = ["make_store", "match_cosine", "planted"]


def planted(n: int = 600, d: int = 48, k: int = 6, *, max_active: int = 3, noise: float = 0.0, seed: int = 0,
            nonnegative_concepts: bool = False):
    """``Z = V U + noise``: each sample mixes 1..max_active concepts with weights in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(k, d, generator=g) if nonnegative_concepts else torch.randn(k, d, generator=g)
    U = U / U.norm(dim=1, keepdim=True)
    n_active = torch.randint(1, max_active + 1, (n, 1), generator=g)
    ranks = torch.rand(n, k, generator=g).argsort(1).argsort(1)
    V = (ranks < n_active) * (torch.rand(n, k, generator=g) + 0.5)
    Z = V @ U
    if noise:
        Z = Z + noise * torch.randn(n, d, generator=g) / d ** 0.5
    return Z, V, U


def match_cosine(U: torch.Tensor, W: torch.Tensor) -> float:
    """Mean |cosine| between planted rows ``U`` and learnt rows ``W`` after Hungarian matching."""
    Un = U / U.norm(dim=1, keepdim=True)
    Wn = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    c = (Un @ Wn.T).abs().numpy()
    rows, cols = linear_sum_assignment(-c)
    return float(c[rows, cols].mean())
