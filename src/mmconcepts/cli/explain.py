"""``mmconcepts explain``: the top concepts behind the token of interest in one image."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmconcepts.cli._common import add_model_args, model_options, positive_int
from mmconcepts.errors import MMConceptsError
from mmconcepts.attribution.settings import METHODS


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
    p.add_argument("--top", type=positive_int, default=3, help="number of concepts to show (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--heatmaps", nargs="?", const="attribution", default=None, metavar="METHOD",
                   choices=METHODS,
                   help="add each concept's map over the image (\"heatmap\": {method, grid, box}): attribution "
                        "(the default), occlusion or projection")
    p.add_argument("--heatmap-out", default=None, metavar="DIR",
                   help="write each concept's map over the image as DIR/<image>-concept-<k>.png (implies "
                        "--heatmaps)")
    add_model_args(p, follows_store=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.explanations import explain, format_explanation

    method = args.heatmaps or ("attribution" if args.heatmap_out else None)
    if args.heatmap_out and Path(args.heatmap_out).exists() and not Path(args.heatmap_out).is_dir():
        raise MMConceptsError(f"--heatmap-out {args.heatmap_out} is a file: pass a folder for the PNG maps")
    result = explain(args.concepts, args.image, model=model_options(args), mode=args.mode, caption=args.caption,
                     top=args.top, heatmaps=method)
    if args.heatmap_out and result["token_found"]:
        write_heatmaps(result, args.image, args.heatmap_out)
    print(json.dumps(result) if args.json else format_explanation(result))
    if result["token_found"]:  # a concepts folder copied without its dataset: say which images it cannot show
        from mmconcepts.concepts.concept_set import read_grounding
        from mmconcepts.concepts.images import missing_images

        warning = missing_images(read_grounding(args.concepts), args.concepts)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return 0 if result["token_found"] else 1


def write_heatmaps(result: dict, image, out) -> list[Path]:
    """One PNG per concept of ``result`` with a map: the map over the image, ``out/<image stem>-concept-<k>.png``
    (all rendered before any is written)."""
    from mmconcepts.files import atomic_write_bytes
    from mmconcepts.report.plots import overlay_png_bytes

    out = Path(out)
    stem = Path(image).stem
    pngs = {out / f"{stem}-concept-{c['index']}.png": overlay_png_bytes(image, c["heatmap"]["grid"],
                                                                         c["heatmap"]["box"], size=256)
            for c in result["concepts"] if c.get("heatmap")}
    out.mkdir(parents=True, exist_ok=True)
    for path, data in pngs.items():
        atomic_write_bytes(path, data)
    return list(pngs)
