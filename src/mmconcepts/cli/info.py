"""``mmconcepts info``: load a model and print its architecture, layers, hidden size and vocabulary."""

from __future__ import annotations

import argparse

from mmconcepts.cli._common import add_model_args, model_options


def register(subparsers) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser("info", help="show a model's architecture, layers, hidden size and vocabulary",
                                   description=__doc__)
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.set_defaults(func=run)


def format_info(info: dict) -> str:
    """``key: value`` lines with the values aligned."""
    width = max(len(k) for k in info) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in info.items())


def run(args: argparse.Namespace) -> int:
    """Load the model and print its description."""
    import json

    info = model_options(args).load().info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
