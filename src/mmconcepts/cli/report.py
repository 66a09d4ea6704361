"""``mmconcepts report``: one self-contained HTML file that shows the concepts, their words and images,
their overlap, the metrics against the baselines, the per-layer sweep and local explanations."""

from __future__ import annotations

import argparse

from mmconcepts.cli._common import nonnegative_int
import sys


def register(subparsers) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser("report", help="write a self-contained HTML report of a concepts folder",
                                   description=__doc__)
    parser.add_argument("--concepts", required=True, metavar="DIR",
                        help="concepts folder (written by mmconcepts learn, with grounding.json)")
    parser.add_argument("--eval", default=None, metavar="DIR", dest="eval_dir",
                        help="evaluation folder (written by mmconcepts evaluate / sweep): adds metrics, "
                             "overlap, the per-layer plot and local explanations")
    parser.add_argument("--trace", default=None, metavar="DIR", dest="trace_dir",
                        help="trace folder (written by mmconcepts trace): adds, for each word concept, the "
                             "image-token concepts that feed it, with their maps")
    parser.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    parser.add_argument("--n-explanations", type=nonnegative_int, default=6, metavar="N",
                        help="number of test images whose local explanation is shown (default: 6)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report and print where it was written."""
    from mmconcepts.concepts.concept_set import read_grounding
    from mmconcepts.concepts.images import missing_images
    from mmconcepts.report import build_report

    path = build_report(args.concepts, args.eval_dir, out=args.out, n_explanations=args.n_explanations,
                        trace_dir=args.trace_dir)
    print(f"wrote {path}")
    warning = missing_images(read_grounding(args.concepts), args.concepts)
    if warning:  # the page shows a placeholder for each
        print(f"warning: {warning}", file=sys.stderr)
    return 0
