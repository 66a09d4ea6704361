"""``mmconcepts trace``: a word concept's activation traced to the image-token concepts that feed it, or an
image-token concept's to the vision tower's concepts."""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, model_options
from mmconcepts.params import add_arguments, from_args


def register(sub) -> None:
    from mmconcepts.attribution.trace import TraceSettings

    p = sub.add_parser("trace", help="trace word concepts to the image-token concepts that feed them (or "
                                     "image-token concepts to vision concepts)",
                       description="Read each image as the word concepts' store read its images and attribute "
                                   "every word concept's activation to the image-token concepts of an earlier "
                                   "layer (gradient x activation through the decoder, summed over the patches); "
                                   "or, with image-token concepts as --concepts and vision concepts (vision.I) as "
                                   "--through, every image-token concept's activation summed over the image's "
                                   "tokens to the vision concepts (through the rest of the tower, the projector "
                                   "and the decoder); write trace.json, trace.md and the per-patch maps "
                                   "(maps.safetensors) into --out.")
    p.add_argument("--concepts", required=True, metavar="DIR",
                   help="word concepts (a --positions token store), or image-token concepts (a --positions image "
                        "store at a decoder layer or the projector)")
    p.add_argument("--through", required=True, metavar="DIR",
                   help="image-token concepts at an earlier layer (for word concepts), or vision concepts at a "
                        "vision layer vision.I (for image-token concepts)")
    p.add_argument("--images", default=None, metavar="DATASET",
                   help="a dataset folder (e.g. written by `mmconcepts shapesworld`), read in order; or --image")
    p.add_argument("--image", action="append", default=None, metavar="IMG",
                   help="an image to trace (repeat for several)")
    add_arguments(p, TraceSettings)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.attribution.trace import TraceSettings
    from mmconcepts.workflows.trace import image_concept_label, run_trace, traced_label

    result = run_trace(args.concepts, args.through, args.out, images=args.image, dataset=args.images,
                       model=model_options(args), settings=from_args(TraceSettings, args),
                       overwrite=args.overwrite)
    vision = result.info.get("pair") == "image->vision"
    traced, through = ("image-token", "vision") if vision else ("word", "image-token")
    print(f"traced {len(result.word_traces)} {traced} concepts through the {through} concepts on "
          f"{result.info['n_images']} images -> {args.out}")
    for w in result.word_traces:
        tops = "; ".join(f"{c.concept} {image_concept_label(result, c)} ({c.mean:+.3f})" for c in w.ranking[:args.top])
        print(f"  {w.index:>3} {traced_label(result, w)} <- {tops}")
    if result.agreement is not None and result.agreement["n"]:
        a = result.agreement
        print(f"agreement: {a['agree']} of {a['n']} {traced} concepts naming a value ({a['share']:.2f})")
    return 0
