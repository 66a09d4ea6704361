"""``mmconcepts trace``: a word concept's activation traced to the image-token concepts that feed it."""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, model_options
from mmconcepts.params import add_arguments, from_args


def register(sub) -> None:
    from mmconcepts.attribution.trace import TraceSettings

    p = sub.add_parser("trace", help="trace word concepts to the image-token concepts that feed them",
                       description="Read each image as the word concepts' store read its images and attribute "
                                   "every word concept's activation to the image-token concepts of an earlier "
                                   "layer (gradient x activation through the decoder, summed over the patches); "
                                   "write trace.json, trace.md and the per-patch maps (maps.safetensors) into "
                                   "--out.")
    p.add_argument("--concepts", required=True, metavar="DIR",
                   help="word concepts: a concepts folder learnt on a --positions token store")
    p.add_argument("--through", required=True, metavar="DIR",
                   help="image-token concepts: a concepts folder learnt on a --positions image store at an "
                        "earlier layer")
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
    from mmconcepts.workflows.trace import image_concept_label, run_trace

    result = run_trace(args.concepts, args.through, args.out, images=args.image, dataset=args.images,
                       model=model_options(args), settings=from_args(TraceSettings, args),
                       overwrite=args.overwrite)
    print(f"traced {len(result.word_traces)} word concepts through the image-token concepts on "
          f"{result.info['n_images']} images -> {args.out}")
    for w in result.word_traces:
        tops = "; ".join(f"{c.concept} {image_concept_label(result, c)} ({c.mean:+.3f})" for c in w.ranking[:args.top])
        print(f"  {w.index:>3} {', '.join(w.words[:2]) or '(no word)'} <- {tops}")
    if result.agreement is not None and result.agreement["n"]:
        a = result.agreement
        print(f"agreement: {a['agree']} of {a['n']} word concepts naming a value ({a['share']:.2f})")
    return 0
