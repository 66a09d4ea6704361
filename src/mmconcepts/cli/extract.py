"""``mmconcepts extract``: token-of-interest representations into a feature store."""

from __future__ import annotations

import json
import sys

from mmconcepts.cli._common import add_data_args, add_model_args, data_kwargs, model_options, words
from mmconcepts.extract.settings import ExtractionSettings, parse_also
from mmconcepts.params import add_arguments, from_args


def register(sub) -> None:
    p = sub.add_parser("extract", help="record the hidden states from which the model predicts a word",
                       description="Caption images (or read reference captions), find the word of interest, and "
                                   "store the hidden states from which it was predicted. The store's manifest "
                                   "records every setting; later stages follow it.")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="feature-store folder to write")
    add_arguments(p, ExtractionSettings)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted extraction (every setting must be the one it was made with)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.extract import extract

    tokens = tuple(words(args.token))
    settings = from_args(ExtractionSettings, args, also=parse_also(args.also, tokens))
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
