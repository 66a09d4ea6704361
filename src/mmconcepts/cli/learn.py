"""``mmconcepts learn``: fit a concept dictionary on one layer of a feature store."""

from __future__ import annotations

import argparse

from mmconcepts.cli._common import add_grounding_args, add_model_args, grounding_finish, model_options
from mmconcepts.decompose.settings import LearnSettings
from mmconcepts.params import add_arguments, default_of, from_args
from mmconcepts.decompose.registry import METHOD_NAMES, is_method_spec  # read without importing torch


def _method(value: str) -> str:
    """A registry name or a ``package.module:Class`` spec (imported by ``learn``)."""
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
    p.add_argument("--method", default=default_of(LearnSettings, "method"), type=_method, metavar="METHOD",
                   help=f"decomposition: {', '.join(METHOD_NAMES)}, or your own class as package.module:Class "
                        f"(see the README; default {default_of(LearnSettings, 'method')})")
    add_arguments(p, LearnSettings, exclude=("method",))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_grounding_args(p)
    add_model_args(p, follows_store=True)  # --device also runs the dictionary
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.decompose import learn

    options = model_options(args)
    settings = from_args(LearnSettings, args, device=options.device)
    # grounding runs inside learn, before the new folder is swapped in: a failure leaves --out as it was
    out = learn(args.features, out=args.out, settings=settings, overwrite=args.overwrite,
                finish=grounding_finish(args, options))
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
