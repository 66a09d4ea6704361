"""``mmconcepts extract``: token-of-interest representations into a feature store."""

from __future__ import annotations

import json
import sys

from mmconcepts.cli._common import (add_data_args, add_model_args, data_kwargs, layer_list, model_options,
                                    nonnegative_int, positive_int, words)


def register(sub) -> None:
    p = sub.add_parser("extract", help="record the hidden states from which the model predicts a word",
                       description="Caption images (or read reference captions), find the word of interest, and "
                                   "store the hidden states from which it was predicted. The store's manifest "
                                   "records every setting; later stages follow it.")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--token", required=True,
                   help="the word of interest, e.g. dog; or several, comma-separated (dog,cat,bus): one pass keeps "
                        "them all, each row tagged with its word")
    p.add_argument("--also", action="append", default=[], metavar="VARIANTS",
                   help="variants that count as the word: dogs,puppy for one token; dog=dogs,puppy (repeatable) "
                        "for several")
    p.add_argument("--layers", type=layer_list, default=["norm"],
                   help="comma-separated layers, all recorded in one pass, e.g. -1,norm (default: norm)")
    p.add_argument("--out", required=True, metavar="DIR", help="feature-store folder to write")
    p.add_argument("--mode", choices=("generate", "teacher"), default="generate",
                   help="generate: the model's own greedy caption (default); teacher: read the first reference "
                        "caption that holds the word")
    p.add_argument("--keep", choices=("both", "generated"), default="both",
                   help="both: the word must also be in a reference caption (the paper's rule, default); "
                        "generated: the generated caption is enough")
    p.add_argument("--instruction", default=None,
                   help="the user message under the image (default: 'Provide a one-sentence caption for the "
                        "provided image.')")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--num-workers", type=nonnegative_int, default=2,
                   help="DataLoader workers that read and preprocess images while the model runs (default 2; "
                        "0: in the main process)")
    p.add_argument("--max-new-tokens", type=positive_int, default=50, help="longest caption in tokens (default 50)")
    p.add_argument("--min-new-tokens", type=nonnegative_int, default=0,
                   help="generate at least this many tokens (benchmarks use it to fix the length; default 0)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="storage dtype of the features (default float16)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted extraction (every setting must be the one it was made with)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    p.add_argument("--shard-size", type=positive_int, default=1024, help="samples per shard file (default 1024)")
    p.add_argument("--commit-every", type=positive_int, default=256, metavar="N",
                   help="commit progress at least every N scanned images, so a crash loses at most N (default 256)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.extract import extract
    from mmconcepts.extract.settings import ExtractionSettings, parse_also

    tokens = tuple(words(args.token))
    settings = ExtractionSettings(
        token=tokens, also=parse_also(args.also, tokens), layers=tuple(args.layers), mode=args.mode, keep=args.keep,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
        dtype=args.dtype, shard_size=args.shard_size, commit_every=args.commit_every, strict=args.strict,
        num_workers=args.num_workers,
        **({"instruction": args.instruction} if args.instruction is not None else {}))
    import warnings

    from mmconcepts.extract.batches import TruncatedCaptionWarning

    with warnings.catch_warnings(record=True) as caught:  # the captions cut to the context: one warning line
        warnings.simplefilter("always", TruncatedCaptionWarning)
        manifest = extract(args.data, out=args.out, model=model_options(args), settings=settings,
                           resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, **data_kwargs(args))
    for w in caught:
        if issubclass(w.category, TruncatedCaptionWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    counts = manifest["counts"]
    kept = ", ".join(f"{c['kept']} '{t}'" for t, c in counts["tokens"].items())
    print(f"kept {kept} of {counts['scanned']} images (layers {', '.join(manifest['layers'])}) -> {args.out}")
    print(json.dumps(counts), file=sys.stderr if args.quiet else sys.stdout)
    return 0
