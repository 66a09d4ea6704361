"""``mmconcepts benchmark``: every (token, seed, K, method) cell, and the table with 95% intervals.

The flags are generated from :class:`~mmconcepts.workflows.benchmark.settings.BenchmarkSettings` by
:func:`~mmconcepts.params.add_arguments` (each field declares its help and constraint, its default is the
dataclass's); the model options are the shared group of :func:`~mmconcepts.cli._common.add_model_args`.
"""

from __future__ import annotations

from mmconcepts.cli._common import add_model_args, model_options, positive_int
from mmconcepts.params import add_arguments, from_args


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
    add_arguments(p, BenchmarkSettings)
    p.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="torch threads on the CPU (default 1: the embedded model's matrices are small, and on "
                        "a shared machine more threads mostly wait for each other; not a setting of the results)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.workflows.benchmark import BenchmarkSettings, run_benchmark
    from mmconcepts.workflows.benchmark.tables import apart_lines, metric_table

    settings = from_args(BenchmarkSettings, args, model=model_options(args))
    import torch

    torch.set_num_threads(args.threads)  # the process's choice, made here rather than inside the library
    result = run_benchmark(settings, args.out, progress=not args.quiet, log=(lambda line: None) if args.quiet
                           else (lambda line: print(line, flush=True)))
    k = str(settings.n_concepts[0])
    print("\n".join(metric_table(result["summary"], [*settings.method_names, *settings.baselines],
                                 best=result["apart"][k], baselines=settings.baselines)))
    print("\n".join(apart_lines(result["apart"][k], result["summary"])))
    print(f"wrote {args.out}/benchmark.json, benchmark.md and benchmark.html ({len(result['runs'])} runs)")
    return 0
