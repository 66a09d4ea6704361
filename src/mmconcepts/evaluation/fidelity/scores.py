"""The fidelity metrics, as pure functions of states, activations and next-token log-probabilities, and the
typed result: each method's :class:`FidelityRow` and the whole :class:`FidelityResult` (``metrics.json``'s
``fidelity``). The splicing that produces the log-probabilities is :mod:`mmconcepts.evaluation.fidelity.splice`.

Examples
--------
>>> recovered(ce_clean=1.0, ce_spliced=1.5, ce_ablated=3.0)
0.75
>>> kl_recovered(kl_spliced=0.5, kl_ablated=2.0)
0.75
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmconcepts.evaluation.rows import Row

if TYPE_CHECKING:
    import torch

__all__ = ["METRICS", "FidelityResult", "FidelityRow", "FitTally", "cross_entropy", "kl_divergence",
           "kl_recovered", "markdown_table", "recovered"]

#: A method's metrics, in the order tables show them.
METRICS = ("explained_variance", "l0", "dead_concepts", "kl_divergence", "kl_recovered_zero", "kl_recovered_mean",
           "ce_spliced", "ce_recovered_zero", "ce_recovered_mean", "captions_unchanged")


def cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-log p(target)`` of each row (``log_probs``: ``N x V`` log-softmax; ``targets``: ``N`` token ids)."""
    return -log_probs.gather(1, targets.to(log_probs.device)[:, None].long())[:, 0]


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_v p_v (log p_v - log q_v)`` of each row (both ``N x V`` log-softmax); a token ``p``
    gives no mass adds nothing, even where ``q`` gives it none."""
    import torch

    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)


def recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float | None:
    """The share of the cross-entropy loss the splice recovers against an ablation:
    ``(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)`` (1: as good as the clean model, 0: as bad as the
    ablation); ``None`` when the ablation leaves the loss as it is (no scale to measure against).

    It reads ``1 - (CE_spliced - CE_clean) / (CE_ablated - CE_clean)``: how little of the ablation's move of the
    loss the splice makes. Above 1, the splice moved the loss the other way than the ablation does (a loss
    *below* the clean one: the clean model is not the best predictor of one token, and a splice may beat it).
    """
    gap = ce_ablated - ce_clean
    return (ce_ablated - ce_spliced) / gap if abs(gap) > 1e-12 else None


def kl_recovered(kl_spliced: float | None, kl_ablated: float | None) -> float | None:
    """``1 - KL_spliced / KL_ablated`` (each the mean ``KL(p_clean || p)``): 1 for a splice that leaves the
    next-token distribution as it is, 0 for one as far from it as the ablation, below 0 for farther; never above
    1. Unlike :func:`recovered` it has no zero point that can lie on the wrong side: the clean distribution is
    the only one at distance 0. ``None`` when the ablation changes nothing."""
    if kl_spliced is None or kl_ablated is None or kl_ablated <= 1e-12:
        return None
    return 1.0 - kl_spliced / kl_ablated


@dataclass(frozen=True, eq=False)
class FidelityRow(Row):
    """One method's fidelity (``None``: does not apply).

    explained_variance, l0, dead_concepts : of the dictionary on the test store's states
        (:class:`FitTally`).
    kl_divergence : mean ``KL(p_clean || p_spliced)`` of the next-token distribution at the spliced position.
    kl_recovered_zero, kl_recovered_mean : :func:`kl_recovered` against zero- and mean-ablation.
    ce_spliced : mean cross-entropy of the token of interest with the reconstruction spliced in.
    ce_recovered_zero, ce_recovered_mean : :func:`recovered` against zero- and mean-ablation.
    captions_unchanged : share of the images whose greedy caption, generated with the reconstruction spliced
        in, is the clean one.

    Examples
    --------
    >>> FidelityRow(explained_variance=0.9, l0=3.0).to_json()
    {'explained_variance': 0.9, 'l0': 3.0}
    """

    explained_variance: float | None = None
    l0: float | None = None
    dead_concepts: float | None = None
    kl_divergence: float | None = None
    kl_recovered_zero: float | None = None
    kl_recovered_mean: float | None = None
    ce_spliced: float | None = None
    ce_recovered_zero: float | None = None
    ce_recovered_mean: float | None = None
    captions_unchanged: float | None = None


class FitTally:
    """Explained variance, L0 and dead concepts of a dictionary, summed over chunks of states.

    :meth:`add` takes a chunk's states ``Z`` (``n x D``), their reconstruction ``Z_hat`` and which concepts are
    active on each (``n x K`` booleans); :meth:`row` gives

    - ``explained_variance``: ``1 - sum ||z - z_hat||^2 / sum ||z - mean(z)||^2`` (float64 sums; 1 for an exact
      reconstruction, 0 for the mean, below 0 for worse), ``mean(z)`` the ``centre`` given, the mean of all
      states;
    - ``l0``: the mean number of active concepts per state;
    - ``dead_concepts``: the share of concepts active on no state.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> tally = FitTally(Z.double().mean(0))
    >>> tally.add(Z, Z, torch.tensor([[True, False, False], [True, True, False], [True, False, False]]))
    >>> tally.row().to_json()
    {'explained_variance': 1.0, 'l0': 1.3333333333333333, 'dead_concepts': 0.3333333333333333}
    >>> tally = FitTally(Z.double().mean(0))
    >>> tally.add(Z, Z.mean(0).expand_as(Z), torch.ones(3, 2, dtype=torch.bool))
    >>> abs(tally.row()["explained_variance"]) < 1e-12  # the mean explains nothing
    True
    """

    def __init__(self, centre: torch.Tensor):
        self.centre = centre.double().cpu()
        self.error = self.spread = 0.0
        self.n = self.n_active = 0
        self.ever: torch.Tensor | None = None

    def add(self, Z: torch.Tensor, Z_hat: torch.Tensor, active: torch.Tensor) -> None:
        Z = Z.double().cpu()
        self.error += float((Z - Z_hat.double().cpu()).square().sum())
        self.spread += float((Z - self.centre).square().sum())
        self.n += Z.shape[0]
        self.n_active += int(active.sum())
        seen = active.any(0).cpu()
        self.ever = seen if self.ever is None else self.ever | seen

    def row(self) -> FidelityRow:
        """The three metrics (``explained_variance`` absent when the states have no spread)."""
        if not self.n or self.ever is None:
            return FidelityRow()
        return FidelityRow(explained_variance=1.0 - self.error / self.spread if self.spread > 0 else None,
                           l0=self.n_active / self.n, dead_concepts=float((~self.ever).double().mean()))


@dataclass(frozen=True)
class FidelityResult:
    """The fidelity evaluation of every method: ``metrics.json``'s ``fidelity``.

    Parameters
    ----------
    layer, positions : where the states were replaced.
    n_images : test images spliced; ``n_skipped`` of those sampled were left out (the token of interest is not
        in their clean caption).
    n_samples : test store samples the explained variance, L0 and dead concepts are measured on.
    n_positions : positions the mean state is taken over (every real position, prompt and image tokens and
        caption, of the spliced images' teacher-forced sequences).
    ce_clean, ce_zero, ce_mean : mean cross-entropy of the token of interest, clean, with the state zeroed, and
        with the state replaced by the layer's mean state over all positions (mean ablation).
    kl_zero, kl_mean : the two ablations' mean KL divergence from the clean distribution.
    ce_token_mean, kl_token_mean : the same with the state replaced by the mean *training feature* (the mean of
        the states the token is predicted from: a state that predicts the token; no zero point, shown only).
    methods : ``{method: FidelityRow}``.

    Examples
    --------
    >>> result = FidelityResult("norm", "token", 2, 0, 5, 900, 0.5, 7.0, 3.0, 6.0, 2.0, 0.2, 1.4,
    ...                         {"pca": FidelityRow(ce_spliced=0.6)})
    >>> result.to_json()["methods"]
    {'pca': {'ce_spliced': 0.6}}
    """

    layer: str
    positions: str
    n_images: int
    n_skipped: int
    n_samples: int
    n_positions: int
    ce_clean: float | None
    ce_zero: float | None
    ce_mean: float | None
    kl_zero: float | None
    kl_mean: float | None
    ce_token_mean: float | None = None
    kl_token_mean: float | None = None
    methods: dict[str, FidelityRow] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON object (numbers as they are; an absent one is ``null`` at the top, left out of a row)."""
        data = {name: getattr(self, name) for name in ("layer", "positions", "n_images", "n_skipped", "n_samples",
                                                       "n_positions", "ce_clean", "ce_zero", "ce_mean", "kl_zero",
                                                       "kl_mean", "ce_token_mean", "kl_token_mean")}
        return {**data, "methods": {m: dict(row) for m, row in self.methods.items()}}


def markdown_table(fidelity: dict) -> list[str]:
    """``metrics.json``'s ``fidelity`` as markdown lines: one row per method (``–``: does not apply).

    Examples
    --------
    >>> lines = markdown_table({"layer": "norm", "n_images": 2, "ce_clean": 0.5, "ce_zero": 7.0, "ce_mean": 3.0,
    ...                         "methods": {"pca": {"ce_recovered_mean": 0.99}}})
    >>> lines[-1]
    '| pca | – | – | – | – | – | – | – | – | 0.990 | – |'
    """
    def cell(value):
        return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"

    head = (f"## Fidelity: reconstruction spliced in at layer {fidelity.get('layer')}, {fidelity.get('n_images')} "
            f"test images (CE clean {cell(fidelity.get('ce_clean'))}, zero-ablated {cell(fidelity.get('ce_zero'))}, "
            f"mean-ablated {cell(fidelity.get('ce_mean'))}; KL zero-ablated {cell(fidelity.get('kl_zero'))}, "
            f"mean-ablated {cell(fidelity.get('kl_mean'))})")
    lines = [head, "", "| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, row in (fidelity.get("methods") or {}).items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(m)) for m in METRICS) + " |")
    return lines
