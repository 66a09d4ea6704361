"""``mmconcepts evaluate``: grounding and disentanglement of concepts, next to baselines."""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, model_options
from mmconcepts.evaluation.settings import EvaluationSettings
from mmconcepts.params import add_arguments, from_args


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score concepts (overlap, CLIPScore, BERTScore, ground truth) vs baselines",
                       description="Learn the comparison methods on the same training features, encode the test "
                                   "features, and write metrics.json and a markdown table.")
    p.add_argument("--concepts", required=True, metavar="DIR", help="concepts folder written by `mmconcepts learn`")
    p.add_argument("--test-features", required=True, metavar="DIR", help="the feature store to evaluate on")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write metrics.json, metrics.md, ... into")
    add_arguments(p, EvaluationSettings)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from mmconcepts.evaluation.evaluate import evaluate

    metrics = evaluate(args.concepts, args.test_features, args.out, settings=from_args(EvaluationSettings, args),
                       model=model_options(args), overwrite=args.overwrite)
    print((Path(args.out) / "metrics.md").read_text())
    if args.causal:
        from mmconcepts.evaluation.causal.interventions import METRICS, format_table

        rows = {**metrics["methods"], **metrics["baselines"]}
        print(format_table({name: row for name, row in rows.items() if any(m in row for m in METRICS)}))
    print(f"wrote {args.out}/metrics.json ({metrics['n_test']} test samples)")
    return 0
