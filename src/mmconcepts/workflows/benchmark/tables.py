"""``benchmark.md`` and the table the command prints: metric x method, mean and 95% interval.

Rows are metrics and columns methods then baselines (a benchmark has many more metrics than methods, so
this way the table stays readable); each cell reads ``mean [lo, hi]``, the best method's mean in bold, and
``n=..`` when a cell has fewer runs than the others. Below it, one line per metric says which methods the
intervals cannot tell apart; then the same table per token (over seeds), and the headline metrics against K.
"""

from __future__ import annotations

from mmconcepts.workflows.benchmark.summary import metric_order
from mmconcepts.report.benchmark_page import HEADLINE, baseline_names  # the per-token and against-K metrics


def cell_text(stats: dict | None, full_n: int | None = None) -> str:
    """``"0.977 [0.962, 0.991]"`` (an en dash when absent, no interval for one run, ``n=`` when short).

    Parameters
    ----------
    stats : dict or None
        ``{"mean", "ci95", "n"}``.
    full_n : int, optional
        The count of a complete cell.

    Returns
    -------
    str

    Examples
    --------
    >>> cell_text({"mean": 0.5, "ci95": [0.4, 0.6], "n": 3}, full_n=4)
    '0.500 [0.400, 0.600] n=3'
    """
    if not stats or stats.get("mean") is None:
        return "\u2013"
    text = f"{stats['mean']:.3f}"
    if stats.get("ci95"):
        text += f" [{stats['ci95'][0]:.3f}, {stats['ci95'][1]:.3f}]"
    if full_n is not None and stats.get("n", 0) < full_n:
        text += f" n={stats['n']}"
    return text


def _best_mean(summary: dict, apart: dict | None, metric: str) -> float | None:
    """The best method's mean of ``metric`` (every method with that mean is marked), or None."""
    best = (apart or {}).get(metric, {}).get("best")
    return summary[best][metric]["mean"] if best is not None else None


def metric_table(summary: dict, rows: list[str], metrics: list[str] | None = None,
                 best: dict | None = None, baselines=()) -> list[str]:
    """Markdown lines of the table ``metric x row`` of ``summary``, the best method's value in bold.

    Parameters
    ----------
    summary : dict
        ``{row: {metric: stats}}`` (:func:`~mmconcepts.workflows.benchmark.summary.table`).
    rows : list of str
        Columns, in order (methods, then baselines).
    metrics : list of str, optional
        The rows of the table (default: every metric, in table order).
    best : dict, optional
        :func:`~mmconcepts.workflows.benchmark.summary.apart` of ``summary``: whose value is bold.
    baselines : sequence of str
        Columns never marked best.

    Returns
    -------
    list of str
    """
    rows = [r for r in rows if r in summary]
    metrics = metrics or metric_order({m for r in rows for m in summary[r]})
    metrics = [m for m in metrics if any(m in summary[r] for r in rows)]
    lines = ["| metric | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for metric in metrics:
        full = max(summary[r].get(metric, {}).get("n", 0) for r in rows)
        top = _best_mean(summary, best, metric)
        cells = []
        for r in rows:
            text = cell_text(summary[r].get(metric), full)
            bold = top is not None and r not in baselines and summary[r].get(metric, {}).get("mean") == top
            cells.append(f"**{text}**" if bold else text)
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines


def apart_lines(apart: dict, summary: dict) -> list[str]:
    """One line per metric: the best method, and those the intervals cannot tell apart from it.

    Parameters
    ----------
    apart : dict
        :func:`~mmconcepts.workflows.benchmark.summary.apart`.
    summary : dict
        The table it was made from.

    Returns
    -------
    list of str
        Markdown list items.
    """
    lines = []
    for metric, a in apart.items():
        word = "lowest" if a["lower_is_better"] else "highest"
        head = f"- {metric}: {a['best']} {word} ({summary[a['best']][metric]['mean']:.3f})"
        if a["cannot_tell_apart"]:
            lines.append(f"{head}; the intervals cannot tell it apart from {', '.join(a['cannot_tell_apart'])}")
        else:
            lines.append(f"{head}; its interval overlaps no other method's")
    return lines


def markdown(result: dict) -> str:
    """``benchmark.md`` from the content of ``benchmark.json``.

    Parameters
    ----------
    result : dict
        :func:`~mmconcepts.workflows.benchmark.summary.summarize`.

    Returns
    -------
    str
    """
    settings = result["settings"]
    methods, baselines = list(result.get("methods") or settings["methods"]), baseline_names(result)
    ks = [str(k) for k in settings["n_concepts"]]
    data = (f"ShapesWorld, {settings['n_train']} / {settings['n_test']} images per seed" if settings["data"] is None
            else f"{settings['data']} / {settings['test_data']}")
    model = (settings.get("model") or {}).get("model") or "the embedded ShapesWorld captioner"
    lines = [f"# Concept benchmark: {len(settings['tokens'])} tokens x {len(settings['seeds'])} seeds", "",
             f"Tokens {', '.join(settings['tokens'])}; seeds {', '.join(map(str, settings['seeds']))}; model {model}; "
             f"layer {settings['layer']}; {data}. Each cell: {result['interval']} (n runs; the best method in bold)."]
    for k in ks:
        summary = result["summary_by_k"][k]
        lines += ["", f"## K = {k}", ""]
        lines += metric_table(summary, methods + baselines, best=result["apart"][k], baselines=baselines)
        lines += ["", "Where the table cannot tell methods apart (95% intervals overlap):", ""]
        lines += apart_lines(result["apart"][k], summary) or ["- (fewer than two methods with numbers)"]
    if result["skipped"]:
        lines += ["", "## Skipped", ""]
        reasons: dict[tuple, int] = {}
        for s in result["skipped"]:
            reasons[(s["method"], s["reason"])] = reasons.get((s["method"], s["reason"]), 0) + 1
        lines += [f"- {method}: {count} runs: {reason}" for (method, reason), count in reasons.items()]
    k = ks[0]
    lines += ["", f"## Per token (K = {k}; mean and 95% interval over seeds)"]
    for token, summary in result["per_token"][k].items():
        lines += ["", f"### {token}", ""]
        lines += metric_table(summary, methods + baselines, list(HEADLINE))
    if len(ks) > 1:
        lines += ["", "## Against K", ""]
        for metric in [m for m in HEADLINE if any(m in r for s in result["summary_by_k"].values() for r in s.values())]:
            lines += [f"### {metric}", "", "| method | " + " | ".join(f"K = {k}" for k in ks) + " |",
                      "|---|" + "---|" * len(ks)]
            for name in methods + baselines:
                cells = [cell_text(result["summary_by_k"][k].get(name, {}).get(metric)) for k in ks]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    timings = result["timings"]
    stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in timings["cells_s"].items())
    extraction = sum(timings["extraction_s"].values())
    lines += ["", f"Time: extraction {extraction:.0f} s; cells: {stages}"
              + (f"; this run {timings['wall_s']:.0f} s" if timings.get("wall_s") is not None else "") + "."]
    return "\n".join(lines).rstrip() + "\n"
