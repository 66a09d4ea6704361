"""``mmconcepts import-sae``: an SAE trained with SAELens, sparsify or dictionary_learning as a concepts folder."""

from __future__ import annotations

from mmconcepts.cli._common import add_grounding_args, add_model_args, grounding_finish, model_options
from mmconcepts.exchange.import_sae import ImportSettings
from mmconcepts.params import add_arguments, from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-sae", help="import an SAE from SAELens, sparsify or dictionary_learning as concepts",
        description="Read SOURCE, an SAE folder in SAELens (cfg.json + sae_weights.safetensors), sparsify "
                    "(cfg.json + sae.safetensors per hookpoint) or dictionary_learning layout (ae.pt + config.json), "
                    "encode the feature store's samples with it, and write an ordinary concepts folder into --out "
                    "(grounded unless --no-ground), as `mmconcepts learn` does. The SAE's hook name or layer is "
                    "mapped onto the store's layers (--layer overrides); the model is the store's.")
    p.add_argument("source", metavar="SOURCE", help="the SAE's folder (or a run folder of several: --hookpoint)")
    p.add_argument("--features", required=True, metavar="DIR",
                   help="the feature store to learn the activations from: of the model the SAE was trained on "
                        "(mmconcepts extract)")
    add_arguments(p, ImportSettings)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_grounding_args(p)
    add_model_args(p, follows_store=True)  # the model to ground with: the store's unless given
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.exchange.import_sae import import_sae

    out = import_sae(args.source, features=args.features, out=args.out, settings=from_args(ImportSettings, args),
                     overwrite=args.overwrite, finish=grounding_finish(args, model_options(args)))
    from mmconcepts.concepts.concept_set import read_summary

    s = read_summary(out)
    src = s["imported_from"]
    print(f"imported a {src['layout']} {src['architecture']} SAE as {s['n_concepts']} {s['method']} concepts of "
          f"layer {s['layer']} on {s['n_samples']} samples: relative error {s['relative_error']:.4f}, "
          f"{s['active_per_sample']:.1f} active concepts/sample -> {out}")
    return 0
