"""Matryoshka BatchTopK sparse autoencoder concepts (Bussmann et al., 2025; Nabeshima, 2024), trained with
``torch.optim.Adam``.

A :class:`~mmconcepts.decompose.batchtopk_sae.BatchTopKSAE` whose concepts are split into nested groups: the
first ``g_1`` concepts, then the first ``g_1 + g_2``, ... must each reconstruct the input on their own. The
training loss is the mean over the groups of the squared error of each prefix's reconstruction
``b_dec + sum_{k < g_1 + ... + g_i} v_k u_k`` (dictionary_learning's equal group weights), so the early
concepts learn the general directions and the later ones refine them. Inference is BatchTopK's:
``ReLU(pre) * (ReLU(pre) > threshold_)``, the threshold the running mean of the smallest kept activation.

Groups: ``group_sizes`` (summing to ``n_concepts``), or ``n_groups`` groups doubling in size (sizes
proportional to 1, 2, 4, ..., rounded, the last taking the rest).
"""

from __future__ import annotations


from mmconcepts.decompose.batchtopk_sae import BatchTopKSAE
from mmconcepts.decompose.validation import check_int
from mmconcepts.errors import MMConceptsError


def doubling_groups(n_concepts: int, n_groups: int) -> list[int]:
    """``n_groups`` sizes proportional to 1, 2, 4, ... summing to ``n_concepts``, each at least 1.

    Examples
    --------
    >>> doubling_groups(64, 4), doubling_groups(5, 4)
    ([4, 9, 17, 34], [1, 1, 1, 2])
    """
    total = 2 ** n_groups - 1
    ends = [max(i + 1, round(n_concepts * (2 ** (i + 1) - 1) / total)) for i in range(n_groups - 1)]
    ends = [min(e, n_concepts - (n_groups - 1 - i)) for i, e in enumerate(ends)] + [n_concepts]
    for i in range(1, len(ends)):
        ends[i] = max(ends[i], ends[i - 1] + 1)
    return [b - a for a, b in zip([0] + ends[:-1], ends)]


class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka BatchTopK sparse autoencoder: nested groups of concepts, each prefix a reconstruction.

    Parameters
    ----------
    n_concepts : int
        Dictionary size ``K``.
    k : int or None
        Mean active concepts per sample while training (default ``max(1, K // 5)``).
    group_sizes : list of int or None
        Sizes of the nested groups, summing to ``n_concepts``; None: ``n_groups`` doubling groups.
    n_groups : int
        Number of groups when ``group_sizes`` is None (``n_concepts`` groups of one when it is larger).
    threshold_beta, max_iter, tol, batch_size, lr, device, seed
        As :class:`~mmconcepts.decompose.batchtopk_sae.BatchTopKSAE`.

    Attributes
    ----------
    threshold_ : (K,) tensor
        Inference threshold (one value, repeated), in the features' scale.
    components_, encoder_weight_, encoder_bias_, decoder_bias_, input_scale_, input_centred_, n_iter_
        As every :class:`~mmconcepts.decompose.sae.SparseAutoencoder`.

    Examples
    --------
    >>> import torch
    >>> Z = torch.rand(512, 4) @ torch.randn(4, 16)
    >>> sae = MatryoshkaSAE(n_concepts=8, k=2, n_groups=2, max_iter=5).fit(Z)
    >>> sae.groups_
    [3, 5]
    """

    method = "matryoshka-sae"

    def __init__(self, n_concepts: int = 20, *, k: int | None = None, group_sizes: list[int] | None = None,
                 n_groups: int = 4, threshold_beta: float = 0.99, max_iter: int = 100, tol: float = 1e-4,
                 batch_size: int = 256, lr: float = 3e-3, device: str = "cpu", seed: int = 0):
        self.n_concepts = n_concepts
        self.k = k
        self.group_sizes = group_sizes
        self.n_groups = n_groups
        self.threshold_beta = threshold_beta
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        if self.group_sizes is None:
            check_int("n_groups", self.n_groups)
            return
        sizes = self.group_sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise MMConceptsError(f"group_sizes must be a list of positive ints, got {sizes!r}")
        for size in sizes:
            check_int("each group size", size)
        if sum(sizes) != self.n_concepts:
            raise MMConceptsError(f"group_sizes {list(sizes)} sum to {sum(sizes)}, not n_concepts={self.n_concepts}")

    @property
    def groups_(self) -> list[int]:
        """The sizes of the nested groups, in order."""
        if self.group_sizes is not None:
            return [int(s) for s in self.group_sizes]
        return doubling_groups(int(self.n_concepts), min(int(self.n_groups), int(self.n_concepts)))

    def _reconstruction_loss(self, xb, v, W_dec, b_dec):
        """Mean over the groups of the squared error of each prefix's reconstruction, and the batch's summed
        squared error of the whole one (the last prefix)."""
        recon, total, start = b_dec.expand_as(xb), 0.0, 0
        for size in self.groups_:
            recon = recon + v[:, start:start + size] @ W_dec[start:start + size]
            err = (xb - recon).square().sum(1)
            total = total + err.mean()
            start += size
        return total / len(self.groups_), err.sum().detach()
