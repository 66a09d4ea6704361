"""Scaling: peak memory of extraction and of streaming ``learn`` stays flat as the data grows; time grows linearly.

(a) **extract**: :func:`mmconcepts.extract.extract` of the shipped ShapesWorld captioner in teacher mode (one
    forward pass a batch) on the first 1k, 4k, 16k images (``--extract-sizes``) of one ShapesWorld dataset;
(b) **learn**: streaming :func:`mmconcepts.decompose.learn` (Semi-NMF, ``K = 20``, ``stream=True``, at most
    ``--max-iter`` iterations) on synthetic feature stores of 100k, 400k, 1.6M samples of ``D = 1024``
    (``--learn-sizes``), written with :class:`~mmconcepts.extract.store.FeatureStoreWriter` in float16,
    shards of 8,192 rows (``Z = V U + noise``, 20 planted concepts), in a temporary folder deleted after.

Each measurement runs in a fresh subprocess (this parent never imports torch, so its own peak does not carry
into the children) that reports its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``; ``VmHWM``
as a cross-check), its RSS once imports and model are loaded (the base), and its times. For (b) the time of
each iteration comes from the fitted model's ``time_curve_``; the activations (``N x K`` float32, which
``learn`` must return and save) are the one thing that should grow with ``N``, and the table shows them.

Usage::

    python benchmarks/scaling.py                                           # both, default sizes
    python benchmarks/scaling.py --extract-sizes 1000 2000 4000 --learn-sizes 100000 400000 --json s.json
    python benchmarks/scaling.py --skip-extract --learn-sizes 100000 400000 1600000 --max-iter 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peaks() -> dict:
    import resource

    return {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "vmhwm_mb": _status_mb("VmHWM")}


# ------------------------------------------------------------------------------------------------ workers
def worker_dataset(args) -> dict:
    from mmconcepts.data.shapesworld import write_dataset

    t = time.perf_counter()
    write_dataset(args.out, args.n, seed=0)
    return {"seconds": time.perf_counter() - t}


def worker_extract(args) -> dict:
    import torch

    from mmconcepts.extract import extract
    from mmconcepts.models import load_model

    torch.set_num_threads(args.threads)
    adapter = load_model(None, device="cpu")
    base = _status_mb("VmRSS")
    t = time.perf_counter()
    manifest = extract(args.data, "circle", out=args.out, model=adapter, layers=["norm", "0"], mode="teacher",
                       batch_size=args.batch_size, limit=args.n, progress=False)
    seconds = time.perf_counter() - t
    return {"n": args.n, "seconds": seconds, "images_per_s": args.n / seconds, "base_rss_mb": base,
            "kept": manifest["counts"]["kept"], "n_samples": manifest.get("n_samples"), **_peaks()}


def worker_write_store(args) -> dict:
    """A synthetic store of ``n`` samples x ``d``: ``Z = V U + noise``, written shard by shard (float16)."""
    import torch

    from mmconcepts.extract.store import FeatureStoreWriter

    torch.set_num_threads(args.threads)
    n, d, k, shard = args.n, args.d, 20, args.shard_size
    g = torch.Generator().manual_seed(0)
    U = torch.randn(k, d, generator=g)
    U /= U.norm(dim=1, keepdim=True)
    manifest = {"model": "synthetic", "token": "dog", "mode": "generate", "layers": ["norm"], "dtype": "float16",
                "hidden_size": d, "num_layers": 1, "data": "synthetic"}
    writer = FeatureStoreWriter(args.out, manifest, shard_size=shard, commit_every=shard)
    t = time.perf_counter()
    for s in range(0, n, shard):
        m = min(shard, n - s)
        mask = torch.rand(m, k, generator=g) < 0.1
        mask[torch.arange(m), torch.randint(k, (m,), generator=g)] = True
        Z = (mask * (torch.rand(m, k, generator=g) + 0.5)) @ U
        Z += 0.5 * Z.norm(dim=1, keepdim=True).mean() / d ** 0.5 * torch.randn(m, d, generator=g)
        writer.add({"norm": Z}, [{"id": str(i)} for i in range(s, s + m)])
        writer.commit(position=s + m, counts={})
    writer.close(position=n, counts={})
    return {"n": n, "seconds": time.perf_counter() - t}


def worker_learn(args) -> dict:
    import torch

    from mmconcepts.decompose import learn

    learn_module = sys.modules["mmconcepts.decompose.learn"]  # the module (the package exports the function)

    torch.set_num_threads(args.threads)
    built = {}
    build = learn_module._build

    def keep(*a, **kw):  # the fitted model, for its time_curve_
        built["model"] = build(*a, **kw)
        return built["model"]

    learn_module._build = keep
    base = _status_mb("VmRSS")
    t = time.perf_counter()
    out = learn(args.store, "norm", method="semi-nmf", n_concepts=20, out=args.out, stream=True,
                max_iter=args.max_iter)
    seconds = time.perf_counter() - t
    summary = json.loads((Path(out) / "summary.json").read_text())
    curve = built["model"].time_curve_
    steps = sorted(b - a for a, b in zip(curve, curve[1:]))
    return {"n": args.n, "seconds": seconds, "fit_seconds": summary["seconds"], "n_iter": summary["n_iter"],
            "first_iter_end_s": curve[0] if curve else None,
            "s_per_iter": steps[len(steps) // 2] if steps else None, "relative_error": summary["relative_error"],
            "base_rss_mb": base, "activations_mb": args.n * 20 * 4 / 2**20, **_peaks()}


WORKERS = {"dataset": worker_dataset, "extract": worker_extract, "write-store": worker_write_store,
           "learn": worker_learn}


# ------------------------------------------------------------------------------------------------- parent
def spawn(kind: str, timeout: float, **kw) -> dict:
    argv = [sys.executable, __file__, "--worker", kind]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flatness(rows: list[dict], key: str = "ru_maxrss_mb") -> dict:
    first, last = rows[0], rows[-1]
    return {"peak_growth_mb": last[key] - first[key], "size_ratio": last["n"] / first["n"],
            "peak_ratio": last[key] / first[key], "time_ratio": last["seconds"] / first["seconds"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--extract-sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--learn-sizes", type=int, nargs="+", default=[100_000, 400_000, 1_600_000])
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--shard-size", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size")
    p.add_argument("--max-iter", type=int, default=10, help="Semi-NMF iterations at most")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the workers")
    p.add_argument("--learn-threads", type=int, default=None, help="torch threads of (b) (default: --threads)")
    p.add_argument("--skip-extract", action="store_true")
    p.add_argument("--skip-learn", action="store_true")
    p.add_argument("--workdir", default=None, help="temporary folder parent (default: the system's)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    p.add_argument("--json", default=None, help="write the numbers here")
    p.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    for name in ("data", "out", "store"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return {}
    common = dict(threads=args.threads)
    result: dict = {"cpu_cores": os.cpu_count(), "threads": args.threads}
    work = Path(tempfile.mkdtemp(prefix="mmc-scaling-", dir=args.workdir))
    try:
        if not args.skip_extract:
            sizes = sorted(args.extract_sizes)
            data = work / "shapes"
            made = spawn("dataset", args.timeout, out=data, n=sizes[-1])
            print(f"(a) extract, teacher mode, shipped captioner, layers norm,0, batch {args.batch_size} "
                  f"(dataset of {sizes[-1]} images written in {made['seconds']:.1f} s)")
            print(f"  {'images':>8}{'seconds':>9}{'images/s':>10}{'base MB':>9}{'peak MB':>9}{'VmHWM MB':>10}")
            rows = []
            for n in sizes:
                r = spawn("extract", args.timeout, data=data, out=work / f"store-{n}", n=n,
                          batch_size=args.batch_size, **common)
                shutil.rmtree(work / f"store-{n}", ignore_errors=True)
                rows.append(r)
                print(f"  {n:>8}{r['seconds']:>9.1f}{r['images_per_s']:>10.1f}{r['base_rss_mb']:>9.0f}"
                      f"{r['ru_maxrss_mb']:>9.0f}{r['vmhwm_mb']:>10.0f}")
            result["extract"] = {"batch_size": args.batch_size, "rows": rows, **flatness(rows)}
            f = result["extract"]
            print(f"  {f['size_ratio']:.0f}x the images: peak {f['peak_growth_mb']:+.0f} MB ({f['peak_ratio']:.2f}x), "
                  f"time {f['time_ratio']:.2f}x")
            shutil.rmtree(data, ignore_errors=True)
        if not args.skip_learn:
            sizes = sorted(args.learn_sizes)
            learn_threads = args.learn_threads or args.threads
            print(f"(b) learn --stream, semi-nmf K=20, max_iter {args.max_iter}, synthetic float16 stores "
                  f"D={args.d}, shards of {args.shard_size}, {learn_threads} torch threads")
            print(f"  {'samples':>9}{'store GB':>9}{'write s':>8}{'learn s':>8}{'iters':>6}{'s/iter':>7}"
                  f"{'base MB':>8}{'peak MB':>8}{'VmHWM':>7}{'NxK MB':>7}{'rel err':>8}")
            rows = []
            for n in sizes:
                store = work / f"synthetic-{n}"
                w = spawn("write-store", args.timeout, out=store, n=n, d=args.d, shard_size=args.shard_size,
                          threads=learn_threads)
                gb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e9
                r = spawn("learn", args.timeout, store=store, out=work / f"learn-{n}", n=n,
                          max_iter=args.max_iter, threads=learn_threads)
                shutil.rmtree(store, ignore_errors=True)
                shutil.rmtree(work / f"learn-{n}", ignore_errors=True)
                r.update(write_seconds=w["seconds"], store_gb=gb)
                rows.append(r)
                spi = f"{r['s_per_iter']:.2f}" if r["s_per_iter"] else "-"
                print(f"  {n:>9}{gb:>9.2f}{w['seconds']:>8.1f}{r['seconds']:>8.1f}{r['n_iter']:>6}{spi:>7}"
                      f"{r['base_rss_mb']:>8.0f}{r['ru_maxrss_mb']:>8.0f}{r['vmhwm_mb']:>7.0f}"
                      f"{r['activations_mb']:>7.0f}{r['relative_error']:>8.4f}")
            result["learn"] = {"d": args.d, "max_iter": args.max_iter, "threads": learn_threads, "rows": rows,
                               **flatness(rows)}
            f = result["learn"]
            spi = [r["s_per_iter"] for r in rows if r["s_per_iter"]]
            if len(spi) == len(rows) and len(rows) > 1:
                f["s_per_iter_ratio"] = spi[-1] / spi[0]
            growth_nk = rows[-1]["activations_mb"] - rows[0]["activations_mb"]
            print(f"  {f['size_ratio']:.0f}x the samples: peak {f['peak_growth_mb']:+.0f} MB ({f['peak_ratio']:.2f}x; "
                  f"the N x K activations alone {growth_nk:+.0f} MB), time {f['time_ratio']:.2f}x"
                  + (f", time per iteration {f['s_per_iter_ratio']:.2f}x" if "s_per_iter_ratio" in f else ""))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
