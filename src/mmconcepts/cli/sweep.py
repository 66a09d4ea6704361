"""``mmconcepts sweep``: concepts and their metrics at every layer."""

from __future__ import annotations

from mmconcepts.cli._common import layer_list


def register(sub) -> None:
    p = sub.add_parser("sweep", help="learn and evaluate concepts layer by layer, plot metrics against depth",
                       description="For each layer stored in both feature stores: learn the dictionary, ground "
                                   "it and evaluate it; writes sweep.json and sweep.png.")
    p.add_argument("--features", required=True, help="training feature store (with every swept layer)")
    p.add_argument("--test-features", required=True, help="test feature store")
    p.add_argument("--layers", type=layer_list, required=True, help="comma-separated layers, e.g. 0,1,2,3,norm")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="semi-nmf")
    p.add_argument("--concepts", type=int, default=20, help="number of concepts K")
    p.add_argument("--clip-model", default=None)
    p.add_argument("--bert-model", default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.evaluation.sweep import sweep

    result = sweep(args.features, args.test_features, args.layers, args.out, method=args.method,
                   n_concepts=args.concepts, clip_model=args.clip_model, bert_model=args.bert_model,
                   device=args.device, seed=args.seed, overwrite=args.overwrite)
    for metric, values in result["metrics"]["method"].items():
        if any(v is not None for v in values):
            cells = "  ".join(f"{layer}:{v:.3f}" for layer, v in zip(result["layers"], values) if v is not None)
            print(f"{metric:<26} {cells}")
    print(f"wrote {args.out}/sweep.json and sweep.png")
    return 0
