"""``mmconcepts explain``: the top concepts behind the token of interest in one image."""

from __future__ import annotations

import json

from mmconcepts.cli._common import add_model_args, model_options


def register(sub) -> None:
    p = sub.add_parser("explain", help="explain one image by its top concepts",
                       description="Run the model on an image, find the token of interest, encode its "
                                   "representation with the learnt dictionary and show the top concepts. The "
                                   "image is read the way the training store read its images (instruction, "
                                   "caption length, variants of the word).")
    p.add_argument("--concepts", required=True, metavar="DIR", help="concepts folder written by `mmconcepts learn`")
    p.add_argument("--image", required=True, help="the image to explain")
    p.add_argument("--mode", choices=("generate", "teacher"), default="generate",
                   help="generate: the model's own caption (default); teacher: read --caption")
    p.add_argument("--caption", default=None, help="caption to read in teacher mode")
    p.add_argument("--top", type=int, default=3, help="number of concepts to show (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.grounding import explain, format_explanation

    result = explain(args.concepts, args.image, model=model_options(args), mode=args.mode, caption=args.caption,
                     top=args.top)
    print(json.dumps(result) if args.json else format_explanation(result))
    return 0 if result["token_found"] else 1
