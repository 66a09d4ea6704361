"""Fused HALS sweeps for CUDA (Triton): every sweep over the ``K`` concepts in one kernel launch.

The rows (samples) are independent, so each program keeps a block of rows' activations in registers and
runs the ``K`` coordinate updates of :func:`mmconcepts.decompose.nnls.hals_sweeps` in order, for several
sweeps, before writing them back: ``B`` and ``V`` are read once and ``V`` written once, instead of ~3 kernel
launches per concept per sweep. Same arithmetic as the torch path (no atomics: deterministic).
Imported only on CUDA; ``TRITON_INTERPRET=1`` runs it on CPU tensors (used by the tests).

Speed: not measured in the session that reviewed the hand-written parts (no GPU was available to it); the
figure comes from ``python benchmarks/decompose.py --device cuda --n 100000 --d 4096 --solvers
ours,ours-torch`` (``ours-torch`` runs the same fit with ``MMCONCEPTS_NO_TRITON=1``, i.e. the plain torch
sweeps), and this kernel should go if that run shows no gain.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_K = 64  # larger dictionaries use the torch path (the kernel unrolls its loop over K)


@triton.jit
def _hals_kernel(V_ptr, B_ptr, G_ptr, inv_ptr, N, l1, n_sweeps,
                 K: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, KP)
    rmask = rows < N
    cmask = cols < K
    offs = cols[None, :] * N + rows[:, None]  # V and B are K x N, row-major: coalesced along the samples
    mask = rmask[:, None] & cmask[None, :]
    V = tl.load(V_ptr + offs, mask=mask, other=0.0)
    B = tl.load(B_ptr + offs, mask=mask, other=0.0) - l1
    for _ in range(n_sweeps):
        for k in tl.static_range(K):
            g = tl.load(G_ptr + k * K + cols, mask=cmask, other=0.0)
            inv = tl.load(inv_ptr + k)
            onek = (cols == k)[None, :]
            dot = tl.sum(V * g[None, :], axis=1)
            vk = tl.sum(tl.where(onek, V, 0.0), axis=1)
            bk = tl.sum(tl.where(onek, B, 0.0), axis=1)
            new = tl.where(inv > 0, tl.maximum(vk + (bk - dot) * inv, 0.0), 0.0)
            V = tl.where(onek, new[:, None], V)
    tl.store(V_ptr + offs, V, mask=mask)


def hals_sweeps_fused(Vt: torch.Tensor, Bt: torch.Tensor, G: torch.Tensor, l1: float, n_sweeps: int) -> None:
    """``n_sweeps`` HALS sweeps on ``Vt`` (``K x N``, contiguous) in place, in one launch."""
    K, N = Vt.shape
    assert K <= MAX_K and Vt.is_contiguous()
    Bt = Bt.contiguous()
    G = G.to(Vt.dtype).contiguous()
    diag = G.diagonal()
    inv = torch.where(diag > 0, 1.0 / diag.clamp_min(1e-30), torch.zeros_like(diag)).contiguous()
    KP = max(16, triton.next_power_of_2(K))
    BLOCK = 128 if KP <= 32 else 64
    grid = (triton.cdiv(N, BLOCK),)
    _hals_kernel[grid](Vt, Bt, G, inv, N, float(l1), int(n_sweeps), K=K, KP=KP, BLOCK=BLOCK)
