"""The ``mmconcepts`` command line.

One module per subcommand (``mmconcepts/cli/<name>.py``); each exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to the function that runs it. ``main`` turns every
:class:`~mmconcepts.errors.MMConceptsError` into a one-line ``error:`` message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mmconcepts import __version__
from mmconcepts.errors import MMConceptsError

#: Subcommand modules, in the order ``--help`` lists them (the order data flows through the pipeline).
COMMANDS = (
    "demo",
    "info",
    "shapesworld",
    "train_toy",
    "score_captions",
    "extract",
    "learn",
    "explain",
    "evaluate",
    "sweep",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmconcepts",
        description="Explain large multimodal models through multimodal concepts.",
    )
    parser.add_argument("--version", action="version", version=f"mmconcepts {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mmconcepts.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not written yet
            if exc.name == f"mmconcepts.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except MMConceptsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
