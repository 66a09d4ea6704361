"""``mmconcepts score-captions``: caption accuracy of a model on a ShapesWorld dataset."""

from __future__ import annotations

import json

from mmconcepts.cli._common import add_data_args, add_model_args, data_kwargs, model_options, positive_int


def register(sub) -> None:
    p = sub.add_parser("score-captions", help="per-attribute caption accuracy on a ShapesWorld dataset",
                       description="Caption a ShapesWorld dataset greedily and print per-attribute accuracy as JSON.")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--max-new-tokens", type=positive_int, default=50, help="longest caption in tokens (default 50)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmconcepts.evaluation.captioning import score_model

    result = score_model(args.data, model=model_options(args), batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, **data_kwargs(args))
    print(json.dumps(result, indent=2))
    return 0
