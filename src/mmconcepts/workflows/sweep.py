"""Layer sweep: learn, ground and evaluate concepts at every stored layer, and plot the metrics by depth.

The train and test feature stores must hold every swept layer (``mmconcepts extract --layers 0,1,2,norm``
records them all in one pass).
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.errors import MMConceptsError, check_count
from mmconcepts.files import atomic_write_bytes, write_json
from mmconcepts.outputs import OutputFolder

SWEEP_METRICS = ("grounding_precision_top1", "clipscore_top1", "bertscore_top1", "overlap", "coverage")


def _order(layer: str) -> float:
    return float("inf") if layer == "norm" else float(layer)


def sweep_png_bytes(sweep: dict) -> bytes:
    """A PNG of each metric against depth, the method next to the rnd-words baseline (matplotlib's object
    API: no pyplot, no global backend switch)."""
    import io

    from matplotlib.figure import Figure

    rows = sweep["metrics"][sweep["method"]]
    names = [m for m in SWEEP_METRICS if any(v is not None for v in rows.get(m, []))]
    fig = Figure(figsize=(3.2 * max(len(names), 1), 2.8))
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)
    x = list(range(len(sweep["layers"])))
    for ax, name in zip(axes[0], names):
        ax.plot(x, rows[name], marker="o", label=sweep["method"])
        baseline = sweep["metrics"].get("rnd-words", {}).get(name)
        if baseline and any(v is not None for v in baseline):
            ax.plot(x, baseline, marker=".", linestyle="--", color="grey", label="rnd-words")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xticks(x, sweep["layers"], fontsize=8)
        ax.set_xlabel("layer", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def sweep(features, test_features, layers, out, *, method: str = "semi-nmf", n_concepts: int = 20, model=None,
          clip_model=None, bert_model=None, seed: int = 0, overwrite: bool = False, token: str | None = None) -> dict:
    """Learn + ground + evaluate ``method`` at each layer; writes per-layer folders, sweep.json and sweep.png.

    ``model``: a loaded adapter, :class:`~mmconcepts.models.ModelOptions` or an id; unset options follow the
    training store's run record. Its ``device`` also runs the dictionaries. ``token``: the word whose rows
    to sweep, in stores of several words.
    """
    from mmconcepts.extract.store import read_manifest, stored_layer

    check_count("n_concepts (-k)", n_concepts, 1)
    check_count("seed (--seed)", seed, 0)
    manifest = read_manifest(features)
    test_manifest = read_manifest(test_features)
    names = []
    for layer in layers:
        name = stored_layer(manifest, layer)
        if name not in test_manifest["layers"]:
            raise MMConceptsError(f"layer {name!r} is not in the test store {test_features}; stored layers: "
                                  f"{', '.join(test_manifest['layers'])}")
        names.append(name)
    names = sorted(dict.fromkeys(names), key=_order)
    out = Path(out)
    with OutputFolder(out, overwrite=overwrite, inputs=[features, test_features]) as tmp:
        return _sweep_into(tmp, features, test_features, manifest, names, method, n_concepts, model, clip_model,
                           bert_model, seed, token)


def _sweep_into(out, features, test_features, manifest, names, method, n_concepts, model, clip_model, bert_model,
                seed, token) -> dict:
    """Every layer's learn + ground + evaluate into ``out`` (the temp folder swapped in at the end)."""
    from mmconcepts.decompose import learn
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.extract.store import store_token
    from mmconcepts.concepts import ground
    from mmconcepts.models import ModelAdapter
    from mmconcepts.models.options import as_options

    if isinstance(model, ModelAdapter):
        adapter, device = model, str(model.device)
    else:
        options = as_options(model).following(manifest)
        adapter, device = options.load(), options.device
    per_layer = {method: {}, "rnd-words": {}}
    for name in names:
        folder = out / f"layer-{name}"
        learn(features, name, method=method, n_concepts=n_concepts, out=folder / "concepts", seed=seed,
              device=device, overwrite=True, token=token)
        ground(folder / "concepts", model=adapter)
        metrics = evaluate(folder / "concepts", test_features, folder / "eval", methods=(method,),
                           baselines=("rnd-words",), clip_model=clip_model, bert_model=bert_model, model=adapter,
                           seed=seed, overwrite=True)
        for key, row in ((method, metrics["methods"][method]), ("rnd-words", metrics["baselines"]["rnd-words"])):
            for metric in SWEEP_METRICS:
                per_layer[key].setdefault(metric, []).append(row.get(metric))
    result = {"method": method, "token": store_token(manifest, token, features), "layers": names,
              "metrics": per_layer}
    atomic_write_bytes(out / "sweep.png", sweep_png_bytes(result))
    write_json(out / "sweep.json", result, indent=2)
    return result
