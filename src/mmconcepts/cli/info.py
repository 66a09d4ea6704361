"""``mmconcepts info``: load a model and print its architecture, layers, hidden size and vocabulary."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options shared by subcommands: ``--model --device --dtype --revision --trust-remote-code``."""
    parser.add_argument("--model", default=None,
                        help="hub id or local model folder (default: the shipped ShapesWorld captioner)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    parser.add_argument("--revision", default=None, help="hub branch, tag or commit")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run code shipped with the checkpoint (off by default)")


def register(subparsers) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser("info", help="show a model's architecture, layers, hidden size and vocabulary",
                                   description=__doc__)
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.set_defaults(func=run)


def format_info(info: dict) -> str:
    """``key: value`` lines with the values aligned."""
    width = max(len(k) for k in info) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in info.items())


def run(args: argparse.Namespace) -> int:
    """Load the model and print its description."""
    import json

    from mmconcepts.models import load_model

    adapter = load_model(args.model, device=args.device, dtype=args.dtype,
                         trust_remote_code=args.trust_remote_code, revision=args.revision)
    info = adapter.info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
