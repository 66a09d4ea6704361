"""``mmconcepts extract``: token-of-interest representations into a feature store."""

from __future__ import annotations

import json
import sys

from mmconcepts.cli._common import add_data_args, add_model_args, layer_list


def register(sub) -> None:
    p = sub.add_parser("extract", help="record the hidden states from which the model predicts a word",
                       description="Caption images (or read reference captions), find the word of interest, and "
                                   "store the hidden states from which it was predicted.")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--token", required=True, help="the word of interest, e.g. dog")
    p.add_argument("--also", default="", help="comma-separated variants that count as the word, e.g. dogs")
    p.add_argument("--layers", type=layer_list, default=["norm"], help="comma-separated layers, e.g. -1,norm")
    p.add_argument("--out", required=True, help="feature-store folder to write")
    p.add_argument("--mode", choices=("generate", "teacher"), default="generate")
    p.add_argument("--keep", choices=("both", "generated"), default="both",
                   help="both: the word must also be in a reference caption (the paper's rule)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--min-new-tokens", type=int, default=0,
                   help="generate at least this many tokens (benchmarks use it to fix the length)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="storage dtype of the features")
    p.add_argument("--resume", action="store_true", help="continue an interrupted extraction")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    p.add_argument("--shard-size", type=int, default=1024, help="samples per shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.extract import extract

    manifest = extract(
        args.data, args.token, out=args.out, model=args.model, layers=args.layers, mode=args.mode,
        also=[w for w in args.also.split(",") if w.strip()], keep=args.keep, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, split=args.split, limit=args.limit, image_root=args.image_root,
        resume=args.resume, overwrite=args.overwrite, dtype=args.dtype, device=args.device,
        model_dtype=args.model_dtype, strict=args.strict, shard_size=args.shard_size, progress=not args.quiet,
    )
    counts = manifest["counts"]
    print(f"kept {counts['kept']} of {counts['scanned']} images for '{manifest['token']}' "
          f"(layers {', '.join(manifest['layers'])}) -> {args.out}")
    print(json.dumps(counts), file=sys.stderr if args.quiet else sys.stdout)
    return 0
