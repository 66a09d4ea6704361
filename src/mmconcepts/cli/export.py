"""``mmconcepts export``: write a concepts folder for SAELens (``cfg.json`` + ``sae_weights.safetensors``) or as
Neuronpedia's export rows (:mod:`mmconcepts.exchange.export`)."""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, model_options
from mmconcepts.exchange.export import ExportSettings
from mmconcepts.params import add_arguments


def register(sub) -> None:
    p = sub.add_parser("export", help="export concepts for SAELens or Neuronpedia",
                       description="Write a concepts folder in SAELens' layout (loaded by "
                                   "sae_lens.SAE.load_from_disk; a method without a linear encoder is exported "
                                   "with an approximating one, and README.md says how far it is from ours) or as "
                                   "Neuronpedia's export rows (features with their words, their top images as "
                                   "activations, each image's region and, with --maps, its concept map).")
    p.add_argument("--concepts", required=True, metavar="DIR", help="concepts folder written by `mmconcepts learn`")
    p.add_argument("--out", required=True, metavar="DIR", help="the export folder")
    add_arguments(p, ExportSettings)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.exchange.export import export
    from mmconcepts.params import from_args

    settings = from_args(ExportSettings, args)
    result = export(args.concepts, args.out, settings, overwrite=args.overwrite,
                    model=model_options(args) if settings.maps else None)
    record = result.record
    if result.format == "saelens":
        print(f"wrote {result.out} (SAELens): relative difference of its encoding to ours "
              f"{record.relative_difference:.3g} over {record.n_samples} features, same top concept "
              f"{100 * record.top1_agreement:.1f}%")
    else:
        print(f"wrote {result.out} (Neuronpedia source {record.source_id}): {record.n_features} features, "
              f"{record.n_activations} activations" + (f", {record.n_maps} maps" if record.n_maps else ""))
    return 0
