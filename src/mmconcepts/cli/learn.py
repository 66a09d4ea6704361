"""``mmconcepts learn``: fit a concept dictionary on one layer of a feature store."""

from __future__ import annotations

import argparse

from mmconcepts.cli._common import (add_model_args, fraction, model_options, nonnegative_float, nonnegative_int,
                                    positive_int)
from mmconcepts.concepts.settings import DECODINGS, MIN_RATIO

#: The methods of :data:`mmconcepts.decompose.METHODS` (listed here so ``--help`` needs no torch import).
METHOD_NAMES = ("semi-nmf", "nmf", "pca", "kmeans", "simple", "topk-sae", "reference-dl")


def _method(value: str) -> str:
    """A registry name or a ``package.module:Class`` spec (imported by ``learn``)."""
    from mmconcepts.decompose.custom import is_method_spec

    if value in METHOD_NAMES or is_method_spec(value):
        return value
    raise argparse.ArgumentTypeError(f"unknown method {value!r}: choose {', '.join(METHOD_NAMES)} or give "
                                     "package.module:Class")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "learn", help="learn a concept dictionary from extracted features",
        description="Fit a concept dictionary (Z ~ V U) on one layer of a feature store and write the dictionary "
                    "(dictionary.safetensors + dictionary.json), the training activations "
                    "(activations.safetensors) and summary.json into --out.")
    p.add_argument("--features", required=True, metavar="DIR",
                   help="the feature store to learn from (mmconcepts extract)")
    p.add_argument("--layer", default=None, help="stored layer (e.g. 31, -1, norm); optional if the store has one")
    p.add_argument("--token", default=None,
                   help="the word whose rows to learn from (required when the store holds several words)")
    p.add_argument("--method", default="semi-nmf", type=_method, metavar="METHOD",
                   help=f"decomposition: {', '.join(METHOD_NAMES)}, or your own class as package.module:Class "
                        "(see the README; default semi-nmf)")
    p.add_argument("-k", "--n-concepts", type=positive_int, default=20, metavar="K",
                   help="number of concepts (default 20)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    p.add_argument("--l1", type=nonnegative_float, default=None,
                   help="L1 weight on the activations, in the features' units (nmf: default 0; reference-dl: "
                        "default 1)")
    p.add_argument("--relative-l1", type=nonnegative_float, default=None,
                   help="L1 weight as a share of the features' mean norm (semi-nmf: default 0.05; 0 for pure "
                        "Semi-NMF)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--max-iter", type=positive_int, default=None, help="maximum iterations (default: the method's)")
    p.add_argument("--tol", type=nonnegative_float, default=None, help="stopping tolerance (default: the method's)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read the store shard by shard (semi-nmf, nmf; default: when features exceed 4 GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    g = p.add_argument_group("grounding (words through the unembedding, most activating images)")
    g.add_argument("--no-ground", action="store_true",
                   help="skip grounding (it reads the model's unembedding and final norm)")
    g.add_argument("--decode", choices=DECODINGS, default="effect",
                   help="effect: the words the concept makes the model say (default); centered: W_U u_k minus "
                        "the mean concept's; paper: W_U u_k as CoX-LMM")
    g.add_argument("--apply-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the final norm before decoding (default: for --decode effect, unless the "
                        "layer is already normed)")
    g.add_argument("--n-words", type=positive_int, default=10, help="most grounded words per concept (default 10)")
    g.add_argument("--min-ratio", type=fraction, default=MIN_RATIO,
                   help=f"keep words scoring at least this share of the concept's best word (default "
                        f"{MIN_RATIO}; 0 keeps every word the concept promotes; not used by --decode paper)")
    g.add_argument("--vocabulary", choices=("all", "captions"), default="all",
                   help="all: any word of the tokenizer (default); captions: only words the model used in "
                        "the store's captions")
    g.add_argument("--keep-token", action="store_true",
                   help="allow the token of interest itself among the grounded words")
    g.add_argument("--copy-images", action="store_true",
                   help="carry a small thumbnail of every concept's top images in --out (images/), so the "
                        "folder explains and reports without the dataset")
    add_model_args(p, follows_store=True)  # --device also runs the dictionary
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.decompose import learn
    from mmconcepts.concepts.settings import GroundingSettings

    # grounding runs inside learn, before the new folder is swapped in: a failure leaves --out as it was
    settings = None if args.no_ground else GroundingSettings(
        decode=args.decode, apply_norm=args.apply_norm, n_words=args.n_words, min_ratio=args.min_ratio,
        vocabulary=args.vocabulary, keep_token=args.keep_token, copy_images=args.copy_images)

    extra = {name: value for name, value in (("max_iter", args.max_iter), ("tol", args.tol)) if value is not None}
    options = model_options(args)
    out = learn(args.features, args.layer, method=args.method, n_concepts=args.n_concepts, out=args.out,
                l1=args.l1, relative_l1=args.relative_l1, device=options.device, seed=args.seed,
                overwrite=args.overwrite, stream=args.stream, token=args.token, grounding=settings,
                grounding_model=options, **extra)
    import os

    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0  # under torchrun, rank 0 writes, reports and grounds
    from mmconcepts.concepts.concept_set import read_summary

    s = read_summary(out)
    print(f"learnt {s['n_concepts']} {s['method']} concepts from {s['n_samples']} samples of layer {s['layer']} "
          f"in {s['seconds']:.1f} s ({s['n_iter']} iterations): relative error {s['relative_error']:.4f}, "
          f"sparsity {s['sparsity']:.2f}, {s['active_per_sample']:.1f} active concepts/sample -> {out}")
    if not args.no_ground:
        from mmconcepts.concepts.concept_set import read_grounding

        for concept in read_grounding(out)["concepts"]:
            words = ", ".join(w["word"] for w in concept["words"][:6]) or "(no word)"
            print(f"  concept {concept['index']:>3}: {words}")
    return 0
