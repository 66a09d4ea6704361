"""Helpers for the decompose tests: planted dictionaries, concept matching, tiny feature stores."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


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


def make_store(path, Z: torch.Tensor, *, layer: str = "3", shard_size: int = 64, num_layers: int = 4):
    """A complete feature store with one layer, written by the store's own writer."""
    from mmconcepts.extract.store import FeatureStoreWriter

    manifest = {"model": "toy-model", "token": "dog", "mode": "generate", "layers": [layer], "dtype": "float32",
                "hidden_size": int(Z.shape[1]), "num_layers": num_layers, "data": "synthetic"}
    writer = FeatureStoreWriter(path, manifest, shard_size=shard_size)
    for s in range(0, Z.shape[0], shard_size):
        chunk = Z[s:s + shard_size]
        writer.add({layer: chunk}, [{"id": str(i)} for i in range(s, s + chunk.shape[0])])
        writer.commit(position=s + chunk.shape[0], counts={})
    writer.close(position=Z.shape[0], counts={})
    return path
