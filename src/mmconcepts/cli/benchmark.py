"""``mmconcepts benchmark``: every (token, seed, K, method) cell, and the table with 95% intervals.

The flags are generated from :class:`~mmconcepts.workflows.benchmark.settings.BenchmarkSettings` (each field's
``metadata`` says its kind and help, its default is the dataclass's); the model options are the shared
group of :func:`~mmconcepts.cli._common.add_model_args`.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from mmconcepts.cli._common import add_model_args, model_options, nonnegative_int, positive_int


def _list(convert, what: str):
    def parse(text: str) -> tuple:
        items = [part.strip() for part in text.split(",") if part.strip()]
        try:
            return tuple(convert(item) for item in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    return parse


_KINDS = {
    "words": {"type": _list(str, "names"), "metavar": "A,B,..."},
    "ints": {"type": _list(nonnegative_int, "integers >= 0"), "metavar": "N,M,..."},
    "counts": {"type": _list(positive_int, "integers >= 1"), "metavar": "N,M,..."},
    "int": {"type": positive_int, "metavar": "N"},
    "text": {"metavar": "NAME"},
    "path": {"metavar": "DIR"},
    "flag": {"action": argparse.BooleanOptionalAction},
}


def _default_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "on" if value is True else "off" if value is False else str(value)


def register(sub) -> None:
    from mmconcepts.workflows.benchmark.settings import BenchmarkSettings

    p = sub.add_parser("benchmark", help="every token x seed x method: the metrics with 95%% confidence intervals",
                       description="Learn, ground and evaluate every method on every (token, seed, K), and write "
                                   "benchmark.json, benchmark.md and benchmark.html into --out: mean and 95%% "
                                   "interval over tokens x seeds of every metric, with the baselines. A second "
                                   "run into the same --out resumes it (finished runs are kept); a changed "
                                   "setting is refused.")
    p.add_argument("--out", default="mmconcepts-benchmark", metavar="DIR",
                   help="the benchmark folder (default ./mmconcepts-benchmark)")
    for f in fields(BenchmarkSettings):
        kind = f.metadata.get("cli")
        if kind is None:
            continue
        default = f.default if f.default is not MISSING else None
        shown = "" if default is None else f" (default {_default_text(default)})"
        flags = [f.metadata["short"]] if f.metadata.get("short") else []
        p.add_argument(*flags, "--" + f.name.replace("_", "-"), dest=f.name, default=default,
                       help=f.metadata["help"] + shown, **_KINDS[kind])
    p.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="torch threads on the CPU (default 1: the embedded model's matrices are small, and on "
                        "a shared machine more threads mostly wait for each other; not a setting of the results)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import fields as settings_fields

    from mmconcepts.workflows.benchmark import BenchmarkSettings, run_benchmark
    from mmconcepts.workflows.benchmark.tables import apart_lines, metric_table

    from mmconcepts.errors import MMConceptsError

    values = {f.name: getattr(args, f.name) for f in settings_fields(BenchmarkSettings) if "cli" in f.metadata}
    settings = BenchmarkSettings(**values, model=model_options(args))
    if args.threads < 1:
        raise MMConceptsError(f"--threads must be a positive integer, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)  # the process's choice, made here rather than inside the library
    result = run_benchmark(settings, args.out, progress=not args.quiet, log=(lambda line: None) if args.quiet
                           else (lambda line: print(line, flush=True)))
    k = str(settings.n_concepts[0])
    print("\n".join(metric_table(result["summary"], [*settings.methods, *settings.baselines],
                                 best=result["apart"][k], baselines=settings.baselines)))
    print("\n".join(apart_lines(result["apart"][k], result["summary"])))
    print(f"wrote {args.out}/benchmark.json, benchmark.md and benchmark.html ({len(result['runs'])} runs)")
    return 0
