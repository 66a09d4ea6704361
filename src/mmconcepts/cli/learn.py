"""``mmconcepts learn``: fit a concept dictionary on one layer of a feature store."""

from __future__ import annotations

import argparse

#: The methods of :data:`mmconcepts.decompose.METHODS` (listed here so ``--help`` needs no torch import).
METHOD_NAMES = ("semi-nmf", "nmf", "pca", "kmeans", "simple", "topk-sae", "reference-dl")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "learn", help="learn a concept dictionary from extracted features",
        description="Fit a concept dictionary (Z ~ V U) on one layer of a feature store and write the dictionary "
                    "(dictionary.safetensors + dictionary.json), the training activations "
                    "(activations.safetensors) and summary.json into --out.")
    p.add_argument("--features", required=True, metavar="DIR", help="feature store folder (mmconcepts extract)")
    p.add_argument("--layer", default=None, help="stored layer (e.g. 31, -1, norm); optional if the store has one")
    p.add_argument("--method", default="semi-nmf", choices=METHOD_NAMES, help="decomposition (default semi-nmf)")
    p.add_argument("--concepts", type=int, default=20, metavar="K", help="number of concepts (default 20)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    p.add_argument("--l1", type=float, default=None,
                   help="L1 weight on the activations (semi-nmf, nmf: default 0; reference-dl: default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-iter", type=int, default=None, help="maximum iterations (default: the method's)")
    p.add_argument("--tol", type=float, default=None, help="stopping tolerance (default: the method's)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read the store shard by shard (semi-nmf, nmf; default: when features exceed 4 GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    g = p.add_argument_group("grounding (words through the unembedding, most activating images)")
    g.add_argument("--no-ground", action="store_true", help="skip grounding (it loads the model)")
    g.add_argument("--model", default=None, help="model to decode with (default: the one the features came from)")
    g.add_argument("--decode", choices=("centered", "paper"), default="centered",
                   help="centered: minus the mean concept's decode (default); paper: W_U u_k as CoX-LMM")
    g.add_argument("--apply-norm", action="store_true", help="apply the final norm before decoding")
    g.add_argument("--n-words", type=int, default=10, help="grounded words per concept (default 10)")
    g.add_argument("--vocabulary", choices=("captions", "all"), default="captions",
                   help="captions: only words the model used in the store's captions (default); all: any word")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.decompose import learn

    extra = {name: value for name, value in (("max_iter", args.max_iter), ("tol", args.tol)) if value is not None}
    out = learn(args.features, args.layer, method=args.method, n_concepts=args.concepts, out=args.out,
                l1=args.l1, device=args.device, seed=args.seed, overwrite=args.overwrite, stream=args.stream,
                **extra)
    import json

    s = json.loads((out / "summary.json").read_text())
    print(f"learnt {s['n_concepts']} {s['method']} concepts from {s['n_samples']} samples of layer {s['layer']} "
          f"in {s['seconds']:.1f} s ({s['n_iter']} iterations): relative error {s['relative_error']:.4f}, "
          f"sparsity {s['sparsity']:.2f}, {s['active_per_sample']:.1f} active concepts/sample -> {out}")
    if not args.no_ground:
        from mmconcepts.grounding import ground

        grounding = ground(out, model=args.model, decode=args.decode, apply_norm=args.apply_norm,
                           n_words=args.n_words, vocabulary=args.vocabulary, device=args.device)
        for concept in grounding["concepts"]:
            words = ", ".join(w["word"] for w in concept["words"][:6]) or "(no word)"
            print(f"  concept {concept['index']:>3}: {words}")
    return 0
