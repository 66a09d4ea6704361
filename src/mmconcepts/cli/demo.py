"""``mmconcepts demo``: the whole pipeline on ShapesWorld with the shipped model, offline."""

from __future__ import annotations

from mmconcepts.params import add_arguments
from mmconcepts.workflows.demo import DemoSettings


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline offline on ShapesWorld and write a report",
                       description="Generate ShapesWorld data, extract the token 'circle' with the shipped "
                                   "captioner, learn and ground concepts, evaluate them against baselines and "
                                   "write report.html.")
    p.add_argument("--out", default="mmconcepts-demo", help="folder to write into (default: ./mmconcepts-demo)")
    add_arguments(p, DemoSettings)
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.params import from_args
    from mmconcepts.workflows.demo import headline, run_demo

    metrics = run_demo(args.out, from_args(DemoSettings, args), overwrite=args.overwrite, progress=not args.quiet)
    print(headline(metrics))
    print(f"report: {metrics['report']}")
    return 0
