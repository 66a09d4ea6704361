"""The benchmark's numbers: mean and 95% confidence interval of every metric over tokens x seeds.

The interval is Student's t: ``mean +- t(0.975, n - 1) * s / sqrt(n)`` with ``s`` the sample standard
deviation (``ddof=1``) of the ``n`` runs (one per token and seed). It is chosen over a percentile bootstrap
because ``n`` is small (12 by default: a bootstrap's percentiles of 12 values are coarse and too narrow)
and it needs no random draws, so the same runs give the same interval. It treats the runs as independent
draws of "a token and a data seed", so it says how far the mean would move with other such draws; it is
not clipped to a metric's range (a precision interval may pass 1 when the runs are all near it). A metric
of one run has no interval (``ci95`` null).

Where two methods' intervals overlap the table cannot tell them apart (:func:`apart`); that test is
conservative (two methods whose intervals touch may still differ in a paired comparison over the same
tokens and seeds), so "cannot be told apart" means "this table does not show a difference".
"""

from __future__ import annotations

import math

from mmconcepts.workflows.benchmark.cells import BASELINES_CELL, FIDELITY_PREFIX

#: Metrics where a smaller value is better; every other ranked metric: larger is better.
LOWER_IS_BETTER = frozenset({"overlap", "overlap_strict", "overlap_words3", "overlap_words10", "empty_concepts",
                             *(FIDELITY_PREFIX + m for m in ("dead_concepts", "kl_divergence", "ce_spliced"))})
CONFIDENCE = 0.95


def unranked() -> frozenset[str]:
    """Metrics no method is better at: the word counts, the probes' ceiling (raw features) and floor (random
    directions), the same for every method of a run, and the fidelity L0 (fewer active concepts is sparser,
    not better)."""
    from mmconcepts.evaluation.extended.probing import PROBED_ATTRIBUTES

    names = {"words_per_concept", "words_per_concept_words3", "words_per_concept_words10", FIDELITY_PREFIX + "l0"}
    for attribute in PROBED_ATTRIBUTES:
        names |= {f"probing_raw_{attribute}", f"probing_random1_{attribute}", f"probing_random3_{attribute}"}
    return frozenset(names)


def interval(values: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, Student-t confidence interval and count of ``values``.

    Parameters
    ----------
    values : list of float
        One value per run (non-finite values are left out).
    confidence : float

    Returns
    -------
    dict
        ``{"mean", "ci95": [lo, hi] or None (fewer than 2 values), "n"}``, rounded to 4 decimals.

    Examples
    --------
    >>> interval([1.0, 2.0, 3.0])   # s = 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    {'mean': 2.0, 'ci95': [-0.4841, 4.4841], 'n': 3}
    """
    from scipy import stats

    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": round(mean, 4), "ci95": None, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)], "n": n}


def metric_order(names) -> list[str]:
    """Metric names in table order: ``metrics.json``'s, the extended metrics', the fidelity's
    (``fidelity_<field>``), then the rest sorted."""
    from mmconcepts.evaluation.results import METRIC_ORDER

    try:
        from mmconcepts.evaluation.extended.collect import EXTENDED_METRICS
    except ImportError:
        EXTENDED_METRICS = ()
    from mmconcepts.evaluation.fidelity.scores import METRICS as FIDELITY_METRICS

    names = set(names)
    known = list(dict.fromkeys([*METRIC_ORDER, *EXTENDED_METRICS, *(FIDELITY_PREFIX + m for m in FIDELITY_METRICS)]))
    return [m for m in known if m in names] + sorted(names - set(known))


def _rows(runs: list[dict]) -> dict[str, list[dict]]:
    """``{row name: [{metric: value} per run]}``: the methods' metrics and each baseline's."""
    rows: dict[str, list[dict]] = {}
    for run in runs:
        if "skipped" in run:
            continue
        if run["method"] == BASELINES_CELL:
            for name, values in run.get("baselines", {}).items():
                rows.setdefault(name, []).append(values)
        else:
            rows.setdefault(run["method"], []).append(run.get("metrics", {}))
    return rows


def table(runs: list[dict], order: list[str]) -> dict:
    """``{row: {metric: interval}}`` over ``runs``, rows in ``order`` (methods, then baselines), then any other
    row the evaluations made (the random directions of image-token concepts) in the order first met."""
    rows = _rows(runs)
    out = {}
    for name in [n for n in order if n in rows] + [n for n in rows if n not in order]:
        metrics = metric_order({k for values in rows[name] for k in values})
        out[name] = {m: interval([values.get(m) for values in rows[name] if m in values]) for m in metrics}
    return out


def _overlaps(a: dict, b: dict) -> bool:
    if a.get("ci95") is None or b.get("ci95") is None:
        return True  # no interval: nothing tells them apart
    return a["ci95"][0] <= b["ci95"][1] and b["ci95"][0] <= a["ci95"][1]


def apart(summary: dict, methods: list[str]) -> dict:
    """Per metric, the best method and which methods its interval cannot tell apart from it.

    Parameters
    ----------
    summary : ``{row: {metric: interval}}`` (:func:`table`).
    methods : the rows that are methods (baselines are not compared).

    Returns
    -------
    dict
        ``{metric: {"best": name, "lower_is_better": bool, "cannot_tell_apart": [names], "behind": [names]}}``
        for every metric at least two methods have, but those of :func:`unranked`; of methods with the same
        best mean, ``best`` is the first and the others cannot be told apart from it.
    """
    out = {}
    names = metric_order({m for name in methods if name in summary for m in summary[name]} - unranked())
    for metric in names:
        have = [n for n in methods if summary.get(n, {}).get(metric, {}).get("mean") is not None]
        if len(have) < 2:
            continue
        lower = metric in LOWER_IS_BETTER
        best = (min if lower else max)(have, key=lambda n: summary[n][metric]["mean"])
        tied = [n for n in have if n != best and _overlaps(summary[n][metric], summary[best][metric])]
        out[metric] = {"best": best, "lower_is_better": lower, "cannot_tell_apart": tied,
                       "behind": [n for n in have if n != best and n not in tied]}
    return out


def summarize(runs: list[dict], settings, *, extraction_s: dict | None = None, wall_s: float | None = None) -> dict:
    """The content of ``benchmark.json`` from the finished cells' records.

    Parameters
    ----------
    runs : every cell's record (:mod:`~mmconcepts.workflows.benchmark.cells`), in plan order.
    settings : the :class:`~mmconcepts.workflows.benchmark.settings.BenchmarkSettings`.
    extraction_s : seconds of each extraction (data seed -> seconds).
    wall_s : seconds of this invocation.

    Returns
    -------
    dict
        ``settings``, ``methods`` (the methods' names in the tables: an imported SAE's is
        ``import:<folder name>``), ``runs``, ``summary`` (``{row: {metric: {"mean", "ci95", "n"}}}`` at the first K, the
        baselines under their names), ``summary_by_k`` (every K), ``per_token`` (K -> token -> the same over
        seeds), ``apart`` (K -> :func:`apart`), ``skipped``, ``interval`` (how the intervals are made) and
        ``timings`` (seconds per stage, summed over the cells).
    """
    methods = list(settings.method_names)
    order = [*methods, *settings.baselines]
    by_k, per_token, separated = {}, {}, {}
    for k in settings.n_concepts:
        mine = [r for r in runs if r["n_concepts"] == k]
        by_k[str(k)] = table(mine, order)
        per_token[str(k)] = {t: table([r for r in mine if r["token"] == t], order) for t in settings.tokens}
        separated[str(k)] = apart(by_k[str(k)], methods)
    stages: dict[str, float] = {}
    for run in runs:
        for stage, seconds in (run.get("seconds") or {}).items():
            stages[stage] = round(stages.get(stage, 0.0) + seconds, 2)
    skipped = [{**{k: r[k] for k in ("token", "seed", "n_concepts", "method")}, "reason": r["skipped"]}
               for r in runs if "skipped" in r]
    return {
        "settings": settings.to_json(),
        "methods": methods,
        "interval": f"mean and {CONFIDENCE:.0%} Student-t interval over the tokens x seeds runs",
        "summary": by_k[str(settings.n_concepts[0])],
        "summary_by_k": by_k,
        "per_token": per_token,
        "apart": separated,
        "skipped": skipped,
        "timings": {"extraction_s": dict(extraction_s or {}), "cells_s": stages, "wall_s": wall_s},
        "runs": runs,
    }
