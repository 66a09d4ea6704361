"""NMF concept dictionary: non-negative features ``Z ~ V U`` with ``V >= 0`` and ``U >= 0``.

The same solver as :class:`~mmconcepts.decompose.semi_nmf.SemiNMF` (HALS activations with exact zeros,
one pass over the data per iteration, streaming and online fitting), with HALS on the concepts too, so they
stay non-negative. Features must be non-negative (e.g. after a ReLU); use Semi-NMF otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmconcepts.decompose.semi_nmf import SemiNMF


class NMF(SemiNMF):
    """Non-negative matrix factorisation ``Z ~ V U``, ``V, U >= 0``, HALS updates, optional L1 on ``V``.

    Parameters, attributes and the ``partial_fit`` contract are those of
    :class:`~mmconcepts.decompose.semi_nmf.SemiNMF`. ``Z`` must be non-negative: ``fit`` and ``partial_fit``
    refuse negative entries (a ``ValueError``), and the estimator's scikit-learn tags say
    ``positive_only``.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(200, 4) @ torch.rand(4, 32)
    >>> model = NMF(n_concepts=4, seed=0).fit(Z)
    >>> bool((model.components_ >= 0).all()), bool((model.transform(Z) >= 0).all())
    (True, True)
    """

    method = "nmf"
    _nonnegative_input = True

    def _components_step(self, U: torch.Tensor, A: torch.Tensor, C: torch.Tensor,
                         spare: Callable[[], torch.Tensor] | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        diag = A.diagonal()
        live = diag > 1e-12 * float(diag.max().clamp_min(1e-300))
        U = U.clone()
        Af = A.to(U.dtype)
        for _ in range(3):
            for k in live.nonzero().flatten().tolist():
                u = (U[k] + (C[k] - Af[k] @ U) / Af[k, k]).clamp_(min=0.0)
                if self.l1 > 0:  # projection onto {u >= 0, ||u|| <= 1}: clamp, then shrink to the ball
                    u = u / torch.linalg.vector_norm(u).clamp_min(1.0)
                U[k] = u
        scale = None
        if self.l1 == 0:
            U, scale = self._normalize(U)
        dead = (~live).nonzero().flatten().tolist()
        if dead and spare is not None:
            rows = self._normalize(spare()[: len(dead)].clamp(min=0.0))[0]
            U[dead[: len(rows)]] = rows
            if scale is not None:
                scale[dead[: len(rows)]] = 0.0
        return U, scale
