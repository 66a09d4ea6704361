"""A concept's activation as a differentiable function of the hidden state (what attribution differentiates).

Attribution explains the concept's activation ``v_k(z)`` at the state ``z`` of the token of interest. It
differentiates the activation *linearised at that state*, ``w_k . z'`` with ``w_k`` the gradient of ``v_k`` at
``z`` (:func:`readout_rows`), wherever along the path from the reference the network is differentiated: the
question asked of every point of the path is then the same one (how much of this concept, as the dictionary
reads it at the explained state), and integrated gradients add up to ``w_k . (z - z_reference)``
(``tests/grounding/test_maps.py``). The gradient ``w_k`` is:

- for a dictionary whose encoder is a torch function of the state (PCA's projection, K-Means' and Simple's
  ``1 / (1 + distance)``, the sparse autoencoder's top-k ReLU): its gradient by autograd, read through
  :func:`~mmconcepts.decompose.base.one_sided` for a signed dictionary;
- for Semi-NMF and NMF, which encode by a non-negative lasso (HALS iterations that autograd cannot follow):
  the *local linear readout* on the active set ``A`` (the concepts with ``v > 0``). The optimality conditions
  read ``(U_A U_A^T) v_A = U_A z - l1`` there, so ``v_k(z) = w_k . z - b_k`` with ``w = (U_A U_A^T)^-1 U_A``
  and ``b = l1 (U_A U_A^T)^-1 1``, exactly, as long as the active set does not change: ``w_k`` is the exact
  gradient almost everywhere, and zero for an inactive concept (its map is then zero: the state does not use
  it). :func:`local_readout` returns ``(w, b)``; ``include_inactive=True`` gives an inactive concept the
  pseudo-inverse row of its active set with it added (the direction that would make it active) instead.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError

__all__ = ["activation_of", "activations_of", "is_lasso_encoded", "local_readout", "readout_rows"]


def is_lasso_encoded(concepts) -> bool:
    """Whether the dictionary encodes by the non-negative lasso (Semi-NMF, NMF)."""
    from mmconcepts.decompose.semi_nmf import SemiNMF

    return isinstance(concepts.dictionary, SemiNMF)


def local_readout(concepts, Z, ks, include_inactive: bool = False):
    """The local linear readout of concept ``ks[i]`` at state ``Z[i]`` of a lasso-encoded dictionary.

    Parameters
    ----------
    concepts : ConceptSet
        A Semi-NMF or NMF concepts folder.
    Z : (N, D) tensor
        States at the dictionary's layer.
    ks : sequence of int
        One concept per row.
    include_inactive : bool
        For a row where the concept is inactive: the pseudo-inverse row of its active set with the concept
        added (module docstring) instead of zero.

    Returns
    -------
    (w, b) : (N, D) and (N,) float32 tensors on ``Z``'s device, such that ``v_k(z) = w . z - b`` near ``Z[i]``.
    """
    import torch

    U = concepts.dictionary.components_.to(Z.device, torch.float64)
    l1 = float(getattr(concepts.dictionary, "l1", 0.0) or 0.0)
    V = concepts.dictionary.transform(Z.detach().float())
    W = torch.zeros(Z.shape[0], U.shape[1], dtype=torch.float64, device=Z.device)
    b = torch.zeros(Z.shape[0], dtype=torch.float64, device=Z.device)
    for i, k in enumerate(ks):
        active = V[i] > 0
        if not active[int(k)] and not include_inactive:
            continue  # inactive: the code does not move with the state, w = 0 (and v = 0)
        active[int(k)] = True
        idx = active.nonzero().reshape(-1)
        UA = U[idx]
        G = UA @ UA.T
        rows = torch.linalg.lstsq(G, UA).solution  # (U_A U_A^T)^-1 U_A, robust to a near-singular G
        bias = torch.linalg.lstsq(G, torch.full((len(idx), 1), l1, dtype=torch.float64, device=Z.device)).solution
        pos = int((idx == int(k)).nonzero()[0, 0])
        W[i], b[i] = rows[pos], bias[pos, 0]
    return W.float(), b.float()


def activation_of(concepts, Z, ks):
    """The activations ``v_{ks[i]}(Z[i])`` as a differentiable function of ``Z`` (``(N,)`` tensor): the local
    linear readout of a lasso-encoded dictionary, the encoder itself otherwise (module docstring)."""
    import torch

    index = torch.as_tensor([int(k) for k in ks], device=Z.device)
    if is_lasso_encoded(concepts):
        w, b = local_readout(concepts, Z, ks)
        return (w.to(Z.dtype) * Z).sum(-1) - b.to(Z.dtype)
    return _encoder_activations(concepts, Z).gather(1, index[:, None]).reshape(-1)


def activations_of(concepts, Z):
    """Every concept's activation at every state, ``(N, K)``, as a differentiable function of ``Z``: what
    :func:`activation_of` gives concept by concept, in one pass (for a lasso-encoded dictionary one solve per state
    over its active set, shared by all its active concepts, an inactive one 0; the encoder itself otherwise)."""
    import torch

    if not is_lasso_encoded(concepts):
        return _encoder_activations(concepts, Z)
    U = concepts.dictionary.components_.to(Z.device, torch.float64)
    l1 = float(getattr(concepts.dictionary, "l1", 0.0) or 0.0)
    V = concepts.dictionary.transform(Z.detach().float())
    rows = []
    for i in range(Z.shape[0]):
        out = torch.zeros(U.shape[0], dtype=Z.dtype, device=Z.device)
        idx = (V[i] > 0).nonzero().reshape(-1)
        if idx.numel():
            UA = U[idx]
            G = UA @ UA.T
            W = torch.linalg.lstsq(G, UA).solution  # (U_A U_A^T)^-1 U_A: the readout of every active concept
            b = torch.linalg.lstsq(G, torch.full((len(idx), 1), l1, dtype=torch.float64, device=Z.device)).solution
            out = out.index_put((idx.to(Z.device),), W.to(Z.dtype) @ Z[i] - b[:, 0].to(Z.dtype))
        rows.append(out)
    return torch.stack(rows)


def _encoder_activations(concepts, Z):
    """``(N, K)``: the encoder's torch function of ``Z`` (one-sided for a signed dictionary), with its graph."""
    import torch

    from mmconcepts.decompose.base import one_sided

    dictionary = concepts.dictionary
    with torch.enable_grad():
        try:
            raw = dictionary._encode(Z.float())  # the encoder's torch function (transform() runs it without grad)
        except (AttributeError, NotImplementedError, TypeError):
            raw = None
        A = one_sided(raw, concepts.signed) if torch.is_tensor(raw) else None
    if A is None or (Z.requires_grad and not A.requires_grad):
        raise MMConceptsError(f"the {type(dictionary).__name__} encoder is not a torch function of the state, so "
                              "attribution cannot differentiate it; use the occlusion or projection heatmaps")
    return A


def readout_rows(concepts, Z, ks):
    """``w``, ``(N, D)``: the gradient of concept ``ks[i]``'s activation at state ``Z[i]`` (module docstring)."""
    import torch

    if is_lasso_encoded(concepts):
        return local_readout(concepts, Z, ks)[0]
    z = Z.detach().float().requires_grad_(True)
    with torch.enable_grad():
        (w,) = torch.autograd.grad(activation_of(concepts, z, ks).sum(), z)
    return w
