"""The benchmark's report page, ``benchmark.html``: one self-contained file, as ``report.html`` is.

It shows the metric x method table of :mod:`mmconcepts.workflows.benchmark.summary` (mean and 95% interval, the best
method marked, baselines apart), which methods the intervals cannot tell apart, the per-token breakdown,
and, when the benchmark has several K, each headline metric against K (one line per method, its interval
as a band). Same rules as the concept report: the CSS inline, no script, plots as base64 PNG, the
Content-Security-Policy that forbids every request, data text through jinja2's autoescaping only.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import atomic_write_text, read_json
from mmconcepts.report.html import _environment
from mmconcepts.report.plots import _plain, line_style, panels_png
from mmconcepts.report.concept_cards import METRICS

#: The headline metrics of the per-token tables and the plot against K, where present.
HEADLINE = ("grounding_precision_top1", "grounding_precision_top3", "coverage", "overlap", "stability",
            "grounding_precision_top1_words3", "coverage_token", "probing_top1_colour")


def _cell(stats: dict | None, best: bool = False) -> dict:
    from mmconcepts.report.concept_cards import fmt

    if not stats or stats.get("mean") is None:
        return {"mean": fmt(None), "ci": "", "n": None, "best": False}
    ci = stats.get("ci95")
    return {"mean": fmt(stats["mean"]), "ci": f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "", "n": stats.get("n"),
            "best": best}


def baseline_names(result: dict) -> list[str]:
    """The baseline columns of a benchmark result: its settings' baselines, then any other row the evaluations
    made beside the methods (``random-direction`` for image-token concepts), in the order first met."""
    settings = result["settings"]
    methods = list(result.get("methods") or settings["methods"])
    named = list(settings["baselines"])
    extra = [r for summary in result.get("summary_by_k", {}).values() for r in summary
             if r not in methods and r not in named]
    return named + list(dict.fromkeys(extra))


def _table(summary: dict, methods: list[str], baselines: list[str], apart: dict | None,
           metrics: list[str] | None = None) -> dict:
    """The template's view of one metric x row table (metrics in the summary's order unless given)."""
    rows = [r for r in [*methods, *baselines] if r in summary]
    names = metrics or list(dict.fromkeys(m for r in rows for m in summary[r]))
    names = [m for m in names if any(m in summary[r] for r in rows)]
    body = []
    for metric in names:
        best = (apart or {}).get(metric, {}).get("best")
        top = summary[best][metric]["mean"] if best is not None else None  # every method at it is marked
        full = max(summary[r].get(metric, {}).get("n", 0) for r in rows)
        cells = []
        for r in rows:
            mean = summary[r].get(metric, {}).get("mean")
            cell = _cell(summary[r].get(metric), top is not None and r in methods and mean == top)
            cell["short"] = cell["n"] is not None and cell["n"] < full
            cells.append(cell)
        lower = (apart or {}).get(metric, {}).get("lower_is_better")
        body.append({"key": metric, "label": METRICS.get(metric, metric), "lower": lower, "cells": cells})
    return {"columns": [{"name": r, "baseline": r in baselines} for r in rows], "rows": body}


def against_k_png(summary_by_k: dict, rows: list[str], metrics: list[str], baselines=()) -> str:
    """Each metric against K: one panel per metric, one line per method with its 95% interval as a band
    (baselines dashed grey, no band).

    Parameters
    ----------
    summary_by_k : dict
        ``{K: {row: {metric: stats}}}``.
    rows : list of str
        Methods then baselines, in legend order.
    metrics : list of str
        One panel each.
    baselines : sequence of str

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    import itertools

    import numpy as np

    ks = list(summary_by_k)
    x = np.array([float(k) for k in ks])

    def panel(ax, metric: str) -> None:
        colours = itertools.count()
        for name in rows:
            stats = [summary_by_k[k].get(name, {}).get(metric) or {} for k in ks]
            y = np.array([s.get("mean") if s.get("mean") is not None else np.nan for s in stats], dtype=float)
            if np.isnan(y).all():
                continue
            style = line_style(name in baselines, colours, width=1.4)
            ax.plot(x, y, label=_plain(name), **style)
            if name not in baselines:
                lo = np.array([s["ci95"][0] if s.get("ci95") else np.nan for s in stats], dtype=float)
                hi = np.array([s["ci95"][1] if s.get("ci95") else np.nan for s in stats], dtype=float)
                ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15, linewidth=0)
        ax.set_title(_plain(METRICS.get(metric, metric)), loc="left")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [_plain(k) for k in ks], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("K", fontsize=7)

    return panels_png(metrics, min(len(metrics), 3), (3.2, 2.1, 0.4), panel)


def build_benchmark_report(benchmark: dict | str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``benchmark.html`` for a benchmark (the content of ``benchmark.json``, or its folder / file).

    Parameters
    ----------
    benchmark : dict or path
    out : path of the HTML file (written atomically).

    Returns
    -------
    Path
    """
    from mmconcepts import __version__

    if not isinstance(benchmark, dict):
        path = Path(benchmark)
        benchmark = read_json(path / "benchmark.json" if path.is_dir() else path, "run mmconcepts benchmark")
        if not isinstance(benchmark.get("summary_by_k"), dict):
            raise MMConceptsError(f"{path} is not a benchmark (no summary_by_k): run mmconcepts benchmark")
    settings = benchmark["settings"]
    methods, baselines = list(benchmark.get("methods") or settings["methods"]), baseline_names(benchmark)
    ks = [str(k) for k in settings["n_concepts"]]
    tables = [{"k": k, "table": _table(benchmark["summary_by_k"][k], methods, baselines, benchmark["apart"][k]),
               "apart": [{"metric": m, **a} for m, a in benchmark["apart"][k].items()]} for k in ks]
    per_token = [{"token": token, "table": _table(summary, methods, baselines, None, list(HEADLINE))}
                 for token, summary in benchmark["per_token"][ks[0]].items()]
    plot = None
    if len(ks) > 1:
        rows = [row for s in benchmark["summary_by_k"].values() for row in s.values()]
        present = [m for m in HEADLINE if any(m in row for row in rows)]
        if present:
            plot = against_k_png(benchmark["summary_by_k"], methods + baselines, present, baselines)
    timings = benchmark.get("timings") or {}
    html = _environment().get_template("benchmark.html.j2").render(
        title=f"mmconcepts benchmark \u2014 {len(settings['tokens'])} tokens x {len(settings['seeds'])} seeds",
        settings=settings,
        model=(settings.get("model") or {}).get("model") or "the embedded ShapesWorld captioner",
        interval=benchmark.get("interval", ""),
        tables=tables,
        per_token=per_token,
        first_k=ks[0],
        plot=plot,
        skipped=benchmark.get("skipped") or [],
        n_runs=len(benchmark.get("runs") or []),
        timing=", ".join([f"extraction {sum((timings.get('extraction_s') or {}).values()):.0f} s"] +
                         [f"{stage} {s:.0f} s" for stage, s in (timings.get("cells_s") or {}).items()]),
        version=__version__,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, html)
    return out
