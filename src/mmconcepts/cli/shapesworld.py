"""``mmconcepts shapesworld``: write a ShapesWorld dataset."""

from __future__ import annotations

from mmconcepts.cli._common import nonnegative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("shapesworld", help="generate a ShapesWorld dataset (images + captions.jsonl)",
                       description="Write N seeded ShapesWorld images with captions and ground-truth attributes.")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--n", type=positive_int, default=1000, help="number of images")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="random seed: the same seed draws the same images (default 0)")
    p.add_argument("--split", default="train", help="train, val or test (recorded on every line)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.data.shapesworld import write_dataset

    out = write_dataset(args.out, n=args.n, seed=args.seed, split=args.split)
    print(f"wrote {args.n} images to {out}")
    return 0
