"""Benchmark: training speed of mmconcepts' SAEs against overcomplete's, dictionary_learning's and SAELens', to
equal reconstruction, on the same features in the same run.

Trainers (each from the same data, on the same device, with batch ``--batch-size``, Adam):

- ours: ``TopKSAE``, ``BatchTopKSAE``, ``JumpReLUSAE``, ``MatryoshkaSAE`` (``partial_fit``, one epoch a
  call: what a user streaming a store gets, its bookkeeping included);
- overcomplete (``overcomplete.sae``): ``TopKSAE``, ``BatchTopKSAE`` (its ``top_k`` counts the batch: ``k * B``),
  ``JumpSAE`` (rectangle kernel, MSE + ``--oc-l1`` L1 on the codes), one epoch of its ``train_sae`` a call;
- SAELens: ``TopKTrainingSAE``, ``BatchTopKTrainingSAE``, ``MatryoshkaBatchTopKTrainingSAE`` trained by its own
  ``SAETrainer`` one ``step`` a batch (the seam its ``fit`` uses), evaluated as it saves them (BatchTopK and
  Matryoshka: JumpReLU with the learnt ``topk_threshold``);
- dictionary_learning (``dictionary_learning.trainers``): ``TopKTrainer``, ``BatchTopKTrainer``,
  ``JumpReluTrainer`` (``target_l0 = k``), ``MatryoshkaBatchTopKTrainer`` (4 groups), driven step by step
  on a plain tensor iterator with ``update(step, x)``; warm-up and the threshold start shortened to the run's
  length (their defaults, 1000 steps, exceed it).

Data: ``Z = V U + noise`` with a planted dictionary of ``2K`` unit directions (sparse non-negative ``V``,
``k`` active per sample), ``N`` rows of width ``D``, scaled to a mean squared norm of ``D`` (what SAELens and
dictionary_learning expect), plus a held-out set of ``N / 5`` rows on which every trainer's relative error
``||Z - Z_hat|| / ||Z||`` is measured after each epoch, with its own inference encoding (the clock stopped
while measuring; CUDA synchronised).

Equal sparsity: an epoch counts only when its L0 (mean active latents per sample, with the trainer's inference
encoding) is at most ``--max-l0-factor`` (1.5) times ``k``; a BatchTopK trainer whose inference threshold has
not started yet encodes densely (dictionary_learning's first epoch: L0 125 for k = 16) and reconstructs far
better than any sparse code, which would make it the target and everyone else "slow". Reported per trainer:
the best held-out error among its sparse epochs, L0 at the end, the time to reach the **target**, the largest
best error among the trainers of a family (TopK, BatchTopK, JumpReLU, Matryoshka) that get sparse, so that
each of them reaches it, and the ratio ours / fastest peer of the family (< 1: ours is faster); ``never``:
never at that error and sparsity. Our JumpReLU and dictionary_learning's ask for ``target_l0 = k`` active concepts (overcomplete's
sets its sparsity by an L1 penalty, ``--oc-l1``): compare the L0 column too.

Examples::

    python benchmarks/sae_speed.py --quick                      # CPU, < 1 min
    python benchmarks/sae_speed.py --n 20000 --d 576 --k-concepts 256 --k 16 --epochs 10
    python benchmarks/sae_speed.py --device cuda --n 200000 --d 576 --k-concepts 4096 --k 32 --json sae.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

FAMILIES = ("topk", "batchtopk", "jumprelu", "matryoshka")


def make_data(n: int, d: int, K: int, k: int, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(2 * K, d, generator=g)
    U /= U.norm(dim=1, keepdim=True)
    def draw(m):
        idx = torch.rand(m, 2 * K, generator=g).argsort(1)[:, :k]
        V = torch.zeros(m, 2 * K).scatter_(1, idx, torch.rand(m, k, generator=g) + 0.5)
        return V @ U + 0.05 * torch.randn(m, d, generator=g)
    Z, Z_test = draw(n), draw(max(n // 5, 100))
    scale = math.sqrt(d / float(Z.square().sum(1).mean()))
    return (Z * scale).to(device), (Z_test * scale).to(device)


def rel_err(Z, Z_hat) -> float:
    return float((Z - Z_hat).double().norm() / Z.double().norm())


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# -- the trainers: each a pair (epoch(), evaluate(Z_test) -> (Z_hat, codes))
def ours(family, Z, args):
    from mmconcepts.decompose import BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, TopKSAE

    common = dict(max_iter=1, batch_size=args.batch_size, lr=args.lr, device=args.device, seed=0)
    sae = {"topk": lambda: TopKSAE(args.k_concepts, k=args.k, **common),
           "batchtopk": lambda: BatchTopKSAE(args.k_concepts, k=args.k, **common),
           "jumprelu": lambda: JumpReLUSAE(args.k_concepts, target_l0=args.k, **common),
           "matryoshka": lambda: MatryoshkaSAE(args.k_concepts, k=args.k, n_groups=4, **common)}[family]()

    def epoch():
        sae.partial_fit(Z)

    def evaluate(X):
        V = sae.transform(X)
        return sae.inverse_transform(V), V
    return epoch, evaluate


def _overcomplete_sae():
    """``overcomplete.sae`` without the package's top-level imports (timm, torchvision, old matplotlib)."""
    import importlib
    import importlib.util
    import types

    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):  # removed in recent matplotlib, used by overcomplete
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    if "overcomplete" not in sys.modules:
        spec = importlib.util.find_spec("overcomplete")
        if spec is None:
            raise SystemExit("overcomplete is not installed: pip install overcomplete (no deps needed)")
        pkg = types.ModuleType("overcomplete")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["overcomplete"] = pkg
    return importlib.import_module("overcomplete.sae"), importlib.import_module("overcomplete.sae.train")


def overcomplete(family, Z, args):
    sae_module, train_module = _overcomplete_sae()
    BatchTopKSAE, JumpSAE, TopKSAE = sae_module.BatchTopKSAE, sae_module.JumpSAE, sae_module.TopKSAE
    train_sae = train_module.train_sae

    D, K, dev = Z.shape[1], args.k_concepts, args.device
    model = {"topk": lambda: TopKSAE(D, K, top_k=args.k, device=dev),
             "batchtopk": lambda: BatchTopKSAE(D, K, top_k=args.k * args.batch_size, device=dev),
             "jumprelu": lambda: JumpSAE(D, K, kernel="rectangle", device=dev)}[family]()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    l1 = args.oc_l1 if family == "jumprelu" else 0.0

    def criterion(x, x_hat, pre_codes, codes, dictionary):
        loss = (x - x_hat).square().sum(-1).mean()
        return loss + l1 * codes.abs().sum(-1).mean() if l1 else loss

    def epoch():
        order = torch.randperm(Z.shape[0], device=Z.device)
        batches = [Z[order[s:s + args.batch_size]] for s in range(0, Z.shape[0], args.batch_size)]
        train_sae(model, batches, criterion, opt, nb_epochs=1, monitoring=0, device=dev)

    def evaluate(X):
        model.eval()
        with torch.no_grad():
            _, codes, X_hat = model(X)
        model.train()
        return X_hat, codes
    return epoch, evaluate


def dictionary_learning(family, Z, args):
    from dictionary_learning.trainers import BatchTopKTrainer, JumpReluTrainer, TopKTrainer
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer

    D, K, dev = Z.shape[1], args.k_concepts, args.device
    per_epoch = math.ceil(Z.shape[0] / args.batch_size)
    steps = per_epoch * args.epochs
    short = dict(steps=steps, activation_dim=D, dict_size=K, layer=0, lm_name="bench", device=dev,
                 warmup_steps=max(1, steps // 20), seed=0)
    thr = dict(threshold_start_step=min(per_epoch, steps // 4))
    trainer = {"topk": lambda: TopKTrainer(k=args.k, **short, **thr),
               "batchtopk": lambda: BatchTopKTrainer(k=args.k, **short, **thr),
               "jumprelu": lambda: JumpReluTrainer(**short, target_l0=float(args.k),
                                                   sparsity_warmup_steps=max(1, steps // 20)),
               "matryoshka": lambda: MatryoshkaBatchTopKTrainer(k=args.k, group_fractions=[1 / 15, 2 / 15, 4 / 15,
                                                                                             8 / 15], **short,
                                                                **thr)}[family]()
    step = [0]

    def epoch():
        order = torch.randperm(Z.shape[0], device=Z.device)
        for s in range(0, Z.shape[0], args.batch_size):
            trainer.update(step[0], Z[order[s:s + args.batch_size]])
            step[0] += 1

    def evaluate(X):
        with torch.no_grad():
            X_hat, codes = trainer.ae(X, output_features=True)
        return X_hat, codes
    return epoch, evaluate


def sae_lens(family, Z, args):
    """SAELens' own trainer (``SAETrainer.step``, the seam its ``fit`` and multi-SAE runner use) on the plain
    batches; inference as SAELens saves them: TopK per sample, BatchTopK and Matryoshka as JumpReLU with the
    learnt ``topk_threshold``."""
    import logging

    from sae_lens import (BatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAE, SAETrainer, TopKTrainingSAE)
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import MatryoshkaBatchTopKTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    D, K, dev = Z.shape[1], args.k_concepts, args.device
    widths = [K // 15, 3 * K // 15, 7 * K // 15, K]  # 4 nested groups of 1, 2, 4, 8 fifteenths, as dictionary_learning's
    sae = {"topk": lambda: TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=K, k=args.k, device=dev)),
           "batchtopk": lambda: BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D, d_sae=K, k=args.k,
                                                                                device=dev)),
           "matryoshka": lambda: MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
               d_in=D, d_sae=K, k=args.k, matryoshka_widths=widths, device=dev))}[family]()
    steps = math.ceil(Z.shape[0] / args.batch_size) * args.epochs
    trainer = SAETrainer(SAETrainerConfig(total_training_samples=steps * args.batch_size,
                                          train_batch_size_samples=args.batch_size, lr=args.lr, lr_end=args.lr, device=dev,
                                          logger=LoggingConfig(log_to_wandb=False)), sae, data_provider=iter(()))

    def epoch():
        order = torch.randperm(Z.shape[0], device=Z.device)
        for s in range(0, Z.shape[0], args.batch_size):
            trainer.step(Z[order[s:s + args.batch_size]])
            trainer.n_training_steps += 1

    def evaluate(X):
        with torch.no_grad():
            if family == "topk":
                codes = sae.encode(X)
            else:
                pre = (X - sae.b_dec * sae.cfg.apply_b_dec_to_input) @ sae.W_enc + sae.b_enc
                codes = pre.relu() * (pre > sae.topk_threshold)
            return sae.decode(codes), codes
    return epoch, evaluate


LIBRARIES = {"ours": ours, "overcomplete": overcomplete, "dictionary_learning": dictionary_learning,
             "sae_lens": sae_lens}
AVAILABLE = {"ours": FAMILIES, "overcomplete": ("topk", "batchtopk", "jumprelu"),
             "dictionary_learning": FAMILIES, "sae_lens": ("topk", "batchtopk", "matryoshka")}


def run_one(library, family, Z, Z_test, args) -> dict:
    torch.manual_seed(0)
    epoch, evaluate = LIBRARIES[library](family, Z, args)
    curve, clock = [], 0.0
    for _ in range(args.epochs):
        sync(args.device)
        t0 = time.perf_counter()
        epoch()
        sync(args.device)
        clock += time.perf_counter() - t0
        X_hat, codes = evaluate(Z_test)
        curve.append((clock, rel_err(Z_test, X_hat), float((codes > 0).float().sum(1).mean())))
        if clock > args.budget:
            break
    sparse = [c for c in curve if c[2] <= args.max_l0]
    return {"library": library, "family": family, "curve": curve,
            "best": min(c[1] for c in sparse) if sparse else None, "l0": curve[-1][2], "seconds": clock}


def time_to(curve, target, max_l0) -> float | None:
    """The training time at which the held-out error first reaches ``target`` with at most ``max_l0`` active
    latents per sample (a dense start, before a threshold is learnt, reconstructs well and counts for nothing)."""
    return next((t for t, err, l0 in curve if err <= target + 1e-12 and l0 <= max_l0), None)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=576)
    p.add_argument("--k-concepts", type=int, default=256)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of ours and overcomplete's "
                                                          "(dictionary_learning picks its own from K)")
    p.add_argument("--oc-l1", type=float, default=1e-3, help="L1 weight of overcomplete's JumpSAE loss")
    p.add_argument("--budget", type=float, default=120.0, help="seconds of training per trainer at most")
    p.add_argument("--device", default="cpu")
    p.add_argument("--libraries", default="ours,overcomplete,dictionary_learning,sae_lens")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--quick", action="store_true", help="N=4000, D=128, K=64, k=8, 6 epochs: under a minute")
    p.add_argument("--max-l0-factor", type=float, default=1.5,
                   help="an epoch counts only when its L0 is at most this factor times k (equal sparsity)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.max_l0 = args.max_l0_factor * args.k
    if args.quick:
        args.n, args.d, args.k_concepts, args.k, args.epochs = 4000, 128, 64, 8, 6
    warnings.filterwarnings("ignore")
    Z, Z_test = make_data(args.n, args.d, args.k_concepts, args.k, 0, args.device)
    print(f"N={args.n} D={args.d} K={args.k_concepts} k={args.k} batch={args.batch_size} epochs={args.epochs} "
          f"device={args.device} threads={torch.get_num_threads()}")
    from mmconcepts.decompose import TopKSAE

    TopKSAE(4, k=1, max_iter=1, device=args.device).fit(Z[:64])  # the first Adam imports torch._dynamo (~1 s)
    runs = []
    for family in args.families.split(","):
        for library in args.libraries.split(","):
            if family in AVAILABLE[library]:
                runs.append(run_one(library, family, Z, Z_test, args))
                r = runs[-1]
                best = f"{r['best']:.4f}" if r["best"] is not None else "  none"
                print(f"  {library:<20} {family:<11} best err {best}  L0 {r['l0']:6.1f}  "
                      f"{r['seconds']:7.2f} s", flush=True)
    print(f"\n{'family':<11} {'library':<20} {'target':>7} {'s to target':>11} {'best err':>8} {'L0':>6} "
          f"{'ours/peer':>9}")
    table = []
    for family in args.families.split(","):
        rows = [r for r in runs if r["family"] == family]
        if not rows:
            continue
        reached = [r["best"] for r in rows if r["best"] is not None]
        if not reached:
            continue
        target = max(reached)  # the worst best error at equal sparsity: every trainer that gets sparse reaches it
        for r in rows:
            r["target"], r["time_to_target"] = target, time_to(r["curve"], target, args.max_l0)
        peers = [r["time_to_target"] for r in rows if r["library"] != "ours" and r["time_to_target"] is not None]
        mine = next((r["time_to_target"] for r in rows if r["library"] == "ours"), None)
        ratio = mine / min(peers) if peers and mine is not None else None
        for r in rows:
            shown = f"{ratio:9.2f}" if r["library"] == "ours" and ratio is not None else " " * 9
            seconds = f"{r['time_to_target']:11.2f}" if r["time_to_target"] is not None else "      never"
            best = f"{r['best']:8.4f}" if r["best"] is not None else "    none"
            print(f"{family:<11} {r['library']:<20} {target:7.4f} {seconds} {best} {r['l0']:6.1f} {shown}")
        table.append({"family": family, "target": target, "ours_over_fastest_peer": ratio})
    result = {"settings": vars(args) | {"json": str(args.json) if args.json else None}, "runs": runs,
              "table": table}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
