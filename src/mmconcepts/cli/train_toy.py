"""``mmconcepts train-toy``: train the embedded ShapesWorld captioner (from scratch or from a checkpoint)."""

from __future__ import annotations

from mmconcepts.cli._common import nonnegative_float, nonnegative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("train-toy", help="train the embedded ShapesWorld captioner (a small LLaVA)",
                       description="Train the small LLaVA-architecture ShapesWorld captioner, from scratch or from a "
                                   "checkpoint (--init-from, which may have another vocabulary), and save it "
                                   "with save_pretrained. This is how the shipped model was made (see its "
                                   "model card).")
    p.add_argument("--out", required=True, help="folder to write the model and processor into")
    p.add_argument("--steps", type=positive_int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per step (default 32)")
    p.add_argument("--lr", type=nonnegative_float, default=2e-3, help="peak learning rate (default 0.002)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the weights and of the data (default 0)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads; use the free cores, no more")
    p.add_argument("--eval-every", type=positive_int, default=250,
                   help="score held-out captions every N steps (default 250)")
    p.add_argument("--init-from", default=None,
                   help="continue from a saved checkpoint folder (the rows of the words it knew are kept)")
    p.add_argument("--step-offset", type=nonnegative_int, default=0, help="shift the data seeds of a continued run")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from mmconcepts.errors import MMConceptsError
    from mmconcepts.toy.train import train

    if args.threads < 1:
        raise MMConceptsError(f"--threads must be a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads)  # the process's choice, made here rather than inside the library
    card = train(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                 eval_every=args.eval_every, init_from=args.init_from,
                 step_offset=args.step_offset)
    print(f"saved to {args.out}: {card['eval']}")
    return 0
