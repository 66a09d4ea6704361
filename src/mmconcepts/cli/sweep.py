"""``mmconcepts sweep``: concepts and their metrics at every layer."""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, layer_list, model_options, nonnegative_int, positive_int
from mmconcepts.cli.learn import METHOD_NAMES


def register(sub) -> None:
    p = sub.add_parser("sweep", help="learn and evaluate concepts layer by layer, plot metrics against depth",
                       description="For each layer stored in both feature stores: learn the dictionary, ground "
                                   "it and evaluate it; writes sweep.json and sweep.png.")
    p.add_argument("--features", required=True, metavar="DIR",
                   help="the feature store to learn from (with every swept layer)")
    p.add_argument("--test-features", required=True, metavar="DIR", help="the feature store to evaluate on")
    p.add_argument("--layers", type=layer_list, required=True, help="comma-separated layers, e.g. 0,1,2,-1,norm")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write sweep.json, sweep.png and the "
                                                              "per-layer folders into")
    p.add_argument("--method", default="semi-nmf", choices=METHOD_NAMES, help="decomposition (default semi-nmf)")
    p.add_argument("--token", default=None,
                   help="the word whose rows to sweep (required when the stores hold several words)")
    p.add_argument("-k", "--n-concepts", type=positive_int, default=20, metavar="K",
                   help="number of concepts (default 20)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or folder for CLIPScore (default: none)")
    p.add_argument("--bert-model", default=None, help="BERTScore model hub id or folder (default: none)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.workflows.sweep import sweep

    result = sweep(args.features, args.test_features, args.layers, args.out, method=args.method,
                   n_concepts=args.n_concepts, clip_model=args.clip_model, bert_model=args.bert_model,
                   model=model_options(args), seed=args.seed, overwrite=args.overwrite, token=args.token)
    for metric, values in result["metrics"][result["method"]].items():
        if any(v is not None for v in values):
            cells = "  ".join(f"{layer}:{v:.3f}" for layer, v in zip(result["layers"], values) if v is not None)
            print(f"{metric:<26} {cells}")
    print(f"wrote {args.out}/sweep.json and sweep.png")
    return 0
