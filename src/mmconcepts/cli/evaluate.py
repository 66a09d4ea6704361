"""``mmconcepts evaluate``: grounding and disentanglement of concepts, next to baselines."""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, model_options, nonnegative_int, positive_int, words


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score concepts (overlap, CLIPScore, BERTScore, ground truth) vs baselines",
                       description="Learn the comparison methods on the same training features, encode the test "
                                   "features, and write metrics.json and a markdown table.")
    p.add_argument("--concepts", required=True, metavar="DIR", help="concepts folder written by `mmconcepts learn`")
    p.add_argument("--test-features", required=True, metavar="DIR", help="the feature store to evaluate on")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write metrics.json, metrics.md, ... into")
    p.add_argument("--methods", default="semi-nmf,pca,kmeans,simple", type=words,
                   help="comma-separated methods to compare (default semi-nmf,pca,kmeans,simple)")
    p.add_argument("--baselines", default="rnd-words,noise-imgs,gt-captions", type=words,
                   help="comma-separated baselines ('' for none; default rnd-words,noise-imgs,gt-captions)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or folder, e.g. openai/clip-vit-base-patch32")
    p.add_argument("--bert-model", default=None, help="BERTScore model hub id or folder")
    p.add_argument("--bert-layers", type=positive_int, default=None, help="BERTScore layer (default: the last)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed of the comparison methods (default 0)")
    p.add_argument("--causal", action="store_true",
                   help="also steer and ablate with each concept and parse the captions: steering/ablation "
                        "success, specificity, fluency, and the centred-direction, random-direction and diffmean "
                        "baselines "
                        "(needs the whole model; slower)")
    p.add_argument("--causal-images", type=positive_int, default=60, metavar="N",
                   help="test images the causal evaluation steers and ablates on (a seeded sample; default 60)")
    p.add_argument("--causal-methods", default=None, type=words, metavar="METHODS",
                   help="comma-separated methods whose concepts --causal steers with (default: every method of "
                        "--methods; the main method's controls are always measured)")
    p.add_argument("--extended", action="store_true",
                   help="also compute the extended metrics of every method: words per concept, empty concepts, "
                        "strict and fixed-word (3, 10) precision and overlap, coverage per attribute kind, "
                        "k-sparse probing and stability (refits each method; slower)")
    p.add_argument("--heatmaps", nargs="?", const=["attribution", "occlusion", "projection"], default="", type=words,
                   metavar="METHODS",
                   help="also map each test image's top-1 concept and score the maps against ShapesWorld's objects "
                        "(pointing game, energy inside, next to the centre and random-patch baselines); "
                        "comma-separated methods, default attribution,occlusion,projection; the first one's maps "
                        "go to maps.json for the report (needs the whole model)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from mmconcepts.evaluation.evaluate import evaluate

    metrics = evaluate(args.concepts, args.test_features, args.out, methods=tuple(args.methods),
                       baselines=tuple(args.baselines), clip_model=args.clip_model, bert_model=args.bert_model,
                       bert_layers=args.bert_layers, model=model_options(args), seed=args.seed,
                       causal=args.causal, causal_images=args.causal_images,
                       causal_methods=None if args.causal_methods is None else tuple(args.causal_methods), extended=args.extended,
                       heatmaps=tuple(args.heatmaps), overwrite=args.overwrite)
    print((Path(args.out) / "metrics.md").read_text())
    if args.causal:
        from mmconcepts.evaluation.causal.interventions import METRICS, format_table

        rows = {**metrics["methods"], **metrics["baselines"]}
        print(format_table({name: row for name, row in rows.items() if any(m in row for m in METRICS)}))
    print(f"wrote {args.out}/metrics.json ({metrics['n_test']} test samples)")
    return 0
