"""``mmconcepts evaluate``: grounding and disentanglement of concepts, next to baselines."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score concepts (overlap, CLIPScore, BERTScore, ground truth) vs baselines",
                       description="Learn the comparison methods on the same training features, encode the test "
                                   "features, and write metrics.json and a markdown table.")
    p.add_argument("--concepts", required=True, help="concepts folder written by `mmconcepts learn`")
    p.add_argument("--features", required=True, help="feature store of the test samples")
    p.add_argument("--out", required=True, help="folder to write metrics.json, metrics.md, ... into")
    p.add_argument("--methods", default="semi-nmf,pca,kmeans,simple", help="comma-separated methods to compare")
    p.add_argument("--baselines", default="rnd-words,noise-imgs,gt-captions",
                   help="comma-separated baselines ('' for none)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or folder, e.g. openai/clip-vit-base-patch32")
    p.add_argument("--bert-model", default=None, help="BERTScore model hub id or folder")
    p.add_argument("--bert-layers", type=int, default=None, help="BERTScore layer (default: the last)")
    p.add_argument("--model", default=None, help="the LMM (default: the one the concepts came from)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def run(args) -> int:
    from mmconcepts.evaluation.evaluate import evaluate

    metrics = evaluate(args.concepts, args.features, args.out, methods=_names(args.methods),
                       baselines=_names(args.baselines), clip_model=args.clip_model, bert_model=args.bert_model,
                       bert_layers=args.bert_layers, model=args.model, device=args.device, seed=args.seed,
                       overwrite=args.overwrite)
    from pathlib import Path

    print((Path(args.out) / "metrics.md").read_text())
    print(f"wrote {args.out}/metrics.json ({metrics['n_test']} test samples)")
    return 0
