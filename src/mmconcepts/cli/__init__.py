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
    "benchmark",
    "info",
    "shapesworld",
    "train_toy",
    "score_captions",
    "extract",
    "learn",
    "import_sae",
    "explain",
    "steer",
    "trace",
    "evaluate",
    "sweep",
    "report",
    "export",
)


class UsageError(Exception):
    """A command line argparse cannot read (unknown option, bad value); ``main`` prints it on one line."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (``error: ...``, exit status 2), like every other error."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


def _say(problem: str) -> None:
    """Print ``error: PROBLEM`` as one write, so that ranks sharing a stderr never interleave their lines."""
    sys.stderr.write(f"error: {problem}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    from mmconcepts.cli._common import join_layer_values

    parser = build_parser()
    try:
        args = parser.parse_args(join_layer_values(list(sys.argv[1:] if argv is None else argv)))
    except UsageError as exc:
        _say(str(exc))
        return 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except MMConceptsError as exc:
        _say(str(exc))
        return exc.exit_code
    except OSError as exc:  # the disk or the system said no where no stage named it: still one line
        from mmconcepts.outputs import os_error

        _say(os_error(exc, "mmconcepts " + str(args.command)))
        return 2
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
