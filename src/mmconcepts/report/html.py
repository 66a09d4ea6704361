"""Build the self-contained HTML report of a concepts folder (and, optionally, its evaluation folder).

The report is one HTML file: images are embedded as base64 thumbnails that this module builds from the files
it reads, plots as base64 PNG, the CSS inline, no script, and a Content-Security-Policy that forbids every
request except ``data:`` images. Text from the data or the model only reaches the page through jinja2's
autoescaping. See ``docs/ARCHITECTURE.md`` for the folder layouts read here.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from mmconcepts.errors import MMConceptsError, check_count
from mmconcepts.files import atomic_write_text
from mmconcepts.report.evaluation_sections import _explanations, _metrics, _overlap, _sweep
from mmconcepts.report.concept_maps import attach_maps, read_maps
from mmconcepts.report.causal_section import _steering
from mmconcepts.report.fidelity_section import _fidelity
from mmconcepts.report.concept_cards import (EXPLAIN_PX, THUMB_PX, _concepts, _facts, _load_activations, _malformed,
                                        _read_json, fmt)


# --- build ---------------------------------------------------------------------------------------------

def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = fmt
    return env


def _unwrap(data, key: str):
    """The payload of a versioned file (``{"format_version": 2, key: ...}``); files of format 1 are bare."""
    return data[key] if isinstance(data, dict) and "format_version" in data and key in data else data


def build_report(concepts_dir, eval_dir=None, out="report.html", n_explanations: int = 6, trace_dir=None) -> Path:
    """Write the self-contained HTML report of ``concepts_dir`` (and ``eval_dir``, and the trace folder
    ``trace_dir`` of ``mmconcepts trace``) to ``out``; return its path.

    Everything is read and rendered before anything is written; the file appears atomically. Bad input (a
    missing folder or grounding.json, corrupt JSON) raises :class:`MMConceptsError` and writes nothing.
    """
    from mmconcepts import __version__

    check_count("n_explanations (--n-explanations)", n_explanations, 0)  # never a slice: -1 is not "all but one"
    concepts_dir = Path(concepts_dir)
    out = Path(out)
    if not concepts_dir.is_dir():
        raise MMConceptsError(f"concepts folder {concepts_dir} does not exist: pass the folder written by "
                              "mmconcepts learn (--concepts)")
    if out.is_dir():
        raise MMConceptsError(f"{out} is a folder: pass the path of the HTML file to write (--out report.html)")
    if not (concepts_dir / "grounding.json").is_file():
        raise MMConceptsError(f"{concepts_dir} has no grounding.json: run `mmconcepts learn` without --no-ground, "
                              "or pass a grounded concepts folder")
    from mmconcepts.concepts.concept_set import load_concepts

    if (concepts_dir / "dictionary.safetensors").exists():  # made by learn: its files checked against each other
        load_concepts(concepts_dir, require_grounding=True)
    grounding = _read_json(concepts_dir / "grounding.json", "rerun `mmconcepts learn` to rewrite it")
    summary = _read_json(concepts_dir / "summary.json", "rerun mmconcepts learn to rewrite it", required=False)
    if summary is None:
        summary = {}
    elif not isinstance(summary, dict):
        raise _malformed(concepts_dir / "summary.json", "expected an object", "rerun mmconcepts learn")
    activations = _load_activations(concepts_dir / "activations.safetensors")
    if activations is not None and isinstance(grounding, dict) and any(
            isinstance(c, dict) and "sign" in c for c in grounding.get("concepts") or []):
        import torch

        from mmconcepts.decompose.base import one_sided  # signed activations (PCA): each side a concept

        activations = one_sided(torch.tensor(activations)).numpy()
    concepts = _concepts(concepts_dir, grounding, activations)

    metrics = overlap = explanations = sweep = metrics_raw = steering = fidelity = None
    fix = "rerun mmconcepts evaluate to rewrite it"
    if eval_dir is not None:
        eval_dir = Path(eval_dir)
        if not eval_dir.is_dir():
            raise MMConceptsError(f"evaluation folder {eval_dir} does not exist: pass the folder written by "
                                  "mmconcepts evaluate (--eval), or leave --eval out")
        metrics_raw = _read_json(eval_dir / "metrics.json", fix, required=False)
        if metrics_raw is not None and not isinstance(metrics_raw, dict):
            raise _malformed(eval_dir / "metrics.json", "expected an object", fix)
    main = summary.get("method") or (metrics_raw or {}).get("main_method")
    main = str(main) if main is not None else None
    if eval_dir is not None:
        metrics = _metrics(metrics_raw, eval_dir / "metrics.json", main)
        fidelity = _fidelity(metrics_raw, eval_dir / "metrics.json", main)
        overlap = _unwrap(_read_json(eval_dir / "overlap.json", fix, required=False), "methods")
        explanations = _explanations(_unwrap(_read_json(eval_dir / "explanations.json", fix, required=False),
                                             "explanations"),
                                     eval_dir / "explanations.json", concepts, n_explanations, eval_dir)
        sweep = _sweep(eval_dir, main)
        steering = _steering(_read_json(eval_dir / "causal.json", "rerun mmconcepts evaluate --causal to rewrite it",
                                        required=False), eval_dir / "causal.json", concepts, main, eval_dir)
    overlap_view = _overlap(concepts, overlap, (eval_dir or concepts_dir) / "overlap.json", main)
    map_method = attach_maps(concepts, explanations or [], read_maps(eval_dir), eval_dir)  # evaluate --heatmaps
    if map_method is None and any(c.get("map") for e in explanations or [] for c in e["concepts"]):
        map_method = "activation"  # image-token concepts: each one's own activation per patch
    ident, numbers = _facts(summary, metrics_raw, concepts_dir)
    trace = None
    if trace_dir is not None:
        from mmconcepts.report.trace_section import trace_section

        trace = trace_section(trace_dir)

    title_bits = [main] if main else []
    if summary.get("layer") is not None:
        title_bits.append(f"layer {summary['layer']}")
    model = summary.get("model") or (metrics_raw or {}).get("model") or ""
    html = _environment().get_template("report.html.j2").render(
        title="mmconcepts report" + (" \u2014 " + ", ".join(title_bits) if title_bits else ""),
        method=main or "concept dictionary",
        model=str(model),
        ident=ident,
        numbers=numbers,
        decode=str(grounding.get("decode") or ""),
        concepts=concepts,
        has_activations=activations is not None,
        overlap=overlap_view,
        metrics=metrics,
        sweep=sweep,
        explanations=explanations or [],
        map_method=map_method,
        steering=steering,
        fidelity=fidelity,
        trace=trace,
        thumb_px=THUMB_PX,
        explain_px=EXPLAIN_PX,
        version=__version__,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, html)
    return out
