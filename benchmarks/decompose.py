"""Benchmark: mmconcepts SemiNMF vs overcomplete's SemiNMF vs scikit-learn DictionaryLearning (and K-Means).

One run, same input, same device. For each input and solver it reports the time to reach within 1% of
the best relative error (``||Z - VU|| / ||Z||``), the final relative error, the sparsity of the codes and
the peak memory (CPU: peak RSS of a fresh worker process above its RSS once the data is loaded; GPU:
``torch.cuda.max_memory_allocated``). Each solver runs in its own worker process so peaks do not mix.

Inputs: synthetic ``Z = V U + noise`` (sparse non-negative ``V``, unit-norm ``U``) whose best error is
known (the planted factors re-encoded give an upper bound; the best of all runs is used when lower), and
optionally a real feature store (``--features DIR --layer L``, e.g. from ShapesWorld).

Solvers: ``ours`` (SemiNMF, ``l1 = 0``; on CUDA with the fused Triton HALS kernel), ``ours-torch`` (the same
with ``MMCONCEPTS_NO_TRITON=1``: the plain torch HALS sweeps, to measure what the fused kernel buys),
``ours-l1`` (``l1 = --alpha``), ``overcomplete`` and ``sklearn``. Threads: set ``OMP_NUM_THREADS`` (torch
and NumPy's BLAS both read it); the benchmark leaves the thread count alone.

``--kmeans`` instead times K-Means: scikit-learn's ``KMeans`` (what :class:`mmconcepts.decompose.KMeans`
runs on the CPU) against the torch Lloyd path (what it runs on CUDA), from the same k-means++ seeding.

Timing: each solver's curve is recorded per iteration with the error evaluation excluded from the clock
(CUDA synchronised). overcomplete's ``fit`` is replayed step by step with its own init and update
functions; scikit-learn's ``_update_dict`` is wrapped to stamp each iteration. The "memory floor" is the
time to read ``Z`` twice (two reductions over ``Z``): the least a Semi-NMF iteration can cost.

Examples::

    python benchmarks/decompose.py --n 5000 --d 1024 --sklearn-max-iter 10          # CPU, reduced
    python benchmarks/decompose.py --device cuda --n 5000 100000 --d 4096 --solvers ours,overcomplete
    python benchmarks/decompose.py --device cuda --n 100000 --d 4096 --solvers ours,ours-torch  # fused HALS
    python benchmarks/decompose.py --kmeans --device cuda --n 100000 --d 4096
    python benchmarks/decompose.py --smoke                                           # CI: tiny, untimed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOLVERS = ("ours", "ours-torch", "ours-l1", "overcomplete", "sklearn")


# ----------------------------------------------------------------------------------------------- data
def synthetic(n: int, d: int, k: int, noise: float = 0.5, p: float = 0.1, seed: int = 0):
    """``Z = V U + E``: ``V`` sparse >= 0 (each sample 1 + Binomial(k, p) active concepts), ``U`` unit rows,
    ``E`` Gaussian with ``||E|| ~ noise * ||VU|| / sqrt(1 + noise^2)``-ish. Returns ``(Z, V, U)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    U = torch.randn(k, d, generator=g)
    U /= U.norm(dim=1, keepdim=True)
    mask = torch.rand(n, k, generator=g) < p
    mask[torch.arange(n), torch.randint(k, (n,), generator=g)] = True
    V = mask * (torch.rand(n, k, generator=g) + 0.5)
    Z = V @ U
    Z += torch.randn(n, d, generator=g) * (noise * float(Z.norm()) / (n * d) ** 0.5)
    return Z, V, U


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _rel(Z, Zhat) -> float:
    return float(((Z - Zhat).double().square().sum() / Z.double().square().sum()).sqrt())


def _rel_factored(Z, V, U, z_sq: float) -> float:
    """``||Z - V U|| / ||Z||`` from ``N x K`` and ``K x K`` products only (no ``N x D`` temporary, so the
    evaluation does not inflate the solver's peak memory)."""
    import torch

    V, U = V.to(Z.device, Z.dtype), U.to(Z.device, Z.dtype)
    cross = float((V * (Z @ U.T)).sum(dtype=torch.float64))
    quad = float(((V.T @ V).double() * (U @ U.T).double()).sum())
    return max(z_sq - 2.0 * cross + quad, 0.0) ** 0.5 / z_sq ** 0.5


def _peak_cpu_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# -------------------------------------------------------------------------------------------- solvers
def run_ours(Z, k, device, max_iter, l1=0.0):
    from mmconcepts.decompose import SemiNMF
    from mmconcepts.decompose.base import code_stats

    Z = Z.to(device)
    _sync(device)
    model = SemiNMF(k, l1=l1, max_iter=max_iter, device=str(device), seed=0)
    t0 = time.perf_counter()
    V = model.fit_transform(Z)
    _sync(device)
    total = time.perf_counter() - t0
    curve = list(zip(model.time_curve_, model.loss_curve_)) + [(total, model.reconstruction_err_)]
    return {"curve": curve, "final_err": model.reconstruction_err_, "n_iter": model.n_iter_, "seconds": total,
            **code_stats(V)}


def _import_overcomplete():
    """``overcomplete.optimization`` without the package's top-level imports (timm, torchvision)."""
    import importlib.util
    import types

    import matplotlib
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):  # removed in recent matplotlib, used by overcomplete
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    spec = importlib.util.find_spec("overcomplete")
    if spec is None:
        raise SystemExit("overcomplete is not installed: pip install overcomplete (no deps needed)")
    if "overcomplete" not in sys.modules:
        pkg = types.ModuleType("overcomplete")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["overcomplete"] = pkg
    return importlib.import_module("overcomplete.optimization.semi_nmf")


def run_overcomplete(Z, k, device, max_iter):
    import torch

    from mmconcepts.decompose.base import code_stats

    sn = _import_overcomplete()
    torch.manual_seed(0)
    Z = Z.to(device)
    model = sn.SemiNMF(k, solver="mu", device=str(device))
    _sync(device)
    t0 = time.perf_counter()
    codes = model.init_random_z(Z)
    D = model.init_random_d(Z, codes)
    _sync(device)
    clock, curve = time.perf_counter() - t0, []
    z_sq = float(Z.double().square().sum())
    for _ in range(max_iter):  # the body of snmf_multiplicative_update, stamped per step
        t = time.perf_counter()
        old = codes
        codes, D = sn._one_step_snmf_multiplicative_update(Z, codes, D)
        _sync(device)
        clock += time.perf_counter() - t
        curve.append((clock, _rel_factored(Z, codes, D, z_sq)))
        if model.tol > 0 and sn.stopping_criterion(codes, old, model.tol):
            break
    return {"curve": curve, "final_err": curve[-1][1], "n_iter": len(curve), "seconds": clock,
            **code_stats(codes)}


def run_sklearn(Z, k, device, max_iter, alpha):
    import numpy as np
    import torch
    from sklearn.decomposition import _dict_learning as dl

    from mmconcepts.decompose.base import code_stats

    X = Z.cpu().numpy()
    Yt = torch.from_numpy(X)
    z_sq = float(Yt.double().square().sum())
    orig = dl._update_dict
    state = {"excluded": 0.0, "curve": [], "code": None}

    def stamped(dictionary, Y, code, *args, **kw):
        out = orig(dictionary, Y, code, *args, **kw)
        t = time.perf_counter()
        V, U = torch.from_numpy(np.ascontiguousarray(code)), torch.from_numpy(np.ascontiguousarray(dictionary))
        state["curve"].append((t - t0 - state["excluded"], _rel_factored(Yt, V, U, z_sq)))
        state["code"] = code
        state["excluded"] += time.perf_counter() - t
        return out

    dl._update_dict = stamped
    try:
        t0 = time.perf_counter()
        dl.dict_learning(X, k, alpha=alpha, max_iter=max_iter, method="cd", positive_code=True, random_state=0)
        total = time.perf_counter() - t0 - state["excluded"]
    finally:
        dl._update_dict = orig
    curve = state["curve"]
    return {"curve": curve, "final_err": curve[-1][1], "n_iter": len(curve), "seconds": total,
            **code_stats(torch.from_numpy(np.asarray(state["code"])))}


def memory_floor(Z, device, repeats=5) -> float:
    """Seconds to read ``Z`` twice (two full reductions), the least one Semi-NMF iteration needs."""
    Z = Z.to(device)
    Z.sum()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        Z.sum()
        Z.sum()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


# --------------------------------------------------------------------------------------------- worker
def worker(args) -> dict:
    import torch
    from safetensors.torch import load_file

    Z = load_file(args.data)["Z"]
    device = torch.device(args.device)
    if device.type == "cuda":
        Z.to(device)  # initialise the context before measuring
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    if args.solver == "ours":
        res = run_ours(Z, args.k, device, args.max_iter)
    elif args.solver == "ours-torch":
        os.environ["MMCONCEPTS_NO_TRITON"] = "1"  # read at every HALS call: the plain torch sweeps
        try:
            res = run_ours(Z, args.k, device, args.max_iter)
        finally:
            os.environ.pop("MMCONCEPTS_NO_TRITON", None)
    elif args.solver == "ours-l1":
        res = run_ours(Z, args.k, device, args.max_iter, l1=args.alpha)
    elif args.solver == "overcomplete":
        res = run_overcomplete(Z, args.k, device, args.max_iter)
    else:
        res = run_sklearn(Z, args.k, device, args.max_iter, args.alpha)
    if device.type == "cuda":
        res["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        res["peak_mb"] = _peak_cpu_mb() - base
    res["data_mb"] = Z.numel() * 4 / 2**20
    return res


def _spawn(data: str, solver: str, k: int, device: str, max_iter: int, alpha: float, inprocess: bool) -> dict:
    argv = ["--worker", "--data", data, "--solver", solver, "--k", str(k), "--device", device,
            "--max-iter", str(max_iter), "--alpha", str(alpha)]
    if inprocess:
        return worker(build_parser().parse_args(argv))
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{solver} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_to(curve, target) -> float | None:
    for t, err in curve:
        if err <= target:
            return t
    return None


def bench_input(name, Z, U_true, args, solvers, tmp) -> dict:
    from safetensors.torch import save_file

    from mmconcepts.decompose.nnls import nnls

    data = str(Path(tmp) / f"{name}.safetensors")
    save_file({"Z": Z.contiguous()}, data)
    results = {}
    for solver in solvers:
        if solver == "sklearn" and Z.shape[1] > args.sklearn_max_d:
            continue
        max_iter = args.sklearn_max_iter if solver == "sklearn" else args.max_iter
        results[solver] = _spawn(data, solver, args.k, "cpu" if solver == "sklearn" else args.device, max_iter,
                                 args.alpha, args.inprocess)
    planted = None
    if U_true is not None:
        planted = _rel(Z, nnls(Z, U_true) @ U_true)
    best = min([r["final_err"] for r in results.values()] + ([planted] if planted is not None else []))
    target = 1.01 * best
    for r in results.values():
        r["time_to_1pct"] = time_to(r["curve"], target)
        r["curve"] = [(round(t, 4), round(e, 6)) for t, e in r["curve"]]
    floor = memory_floor(Z, args.device if not args.smoke else "cpu")
    ours = results.get("ours")
    per_iter = None
    if ours and len(ours["curve"]) > 2:
        ts = [t for t, _ in ours["curve"][:-1]]
        steps = sorted(b - a for a, b in zip(ts, ts[1:]))
        per_iter = steps[len(steps) // 2] if steps else None
    return {"input": name, "shape": list(Z.shape), "best_err": best, "planted_err": planted,
            "memory_floor_s": floor, "ours_s_per_iter": per_iter, "results": results}


def report(rows) -> str:
    lines = []
    for row in rows:
        lines.append(f"\n{row['input']}  Z {row['shape'][0]} x {row['shape'][1]}  best error {row['best_err']:.5f}"
                     + (f" (planted {row['planted_err']:.5f})" if row["planted_err"] is not None else ""))
        lines.append(f"  {'solver':<13}{'to 1% (s)':>11}{'final err':>11}{'iters':>7}{'total s':>9}"
                     f"{'peak MB':>9}{'sparsity':>10}{'active/sample':>15}")
        for name, r in row["results"].items():
            t = "never" if r["time_to_1pct"] is None else f"{r['time_to_1pct']:.3f}"
            lines.append(f"  {name:<13}{t:>11}{r['final_err']:>11.5f}{r['n_iter']:>7}{r['seconds']:>9.2f}"
                         f"{r['peak_mb']:>9.0f}{r['sparsity']:>10.3f}{r['active_per_sample']:>15.2f}")
        ours = row["results"].get("ours", {}).get("time_to_1pct")
        for other in ("ours-torch", "overcomplete", "sklearn"):
            r = row["results"].get(other)
            if ours and r:
                t = r["time_to_1pct"]
                ratio = f"{t / ours:.1f}x" if t is not None else f">= {r['seconds'] / ours:.1f}x (never reached)"
                lines.append(f"  ours vs {other}: {ratio} sooner")
        if row["ours_s_per_iter"]:
            lines.append(f"  ours per iteration {row['ours_s_per_iter'] * 1e3:.2f} ms, memory floor (Z read twice) "
                         f"{row['memory_floor_s'] * 1e3:.2f} ms: {row['ours_s_per_iter'] / row['memory_floor_s']:.2f}x")
    return "\n".join(lines)


def bench_kmeans(n: int, d: int, k: int, device: str, seed: int = 0, tol: float = 1e-4) -> dict:
    """scikit-learn's KMeans (CPU) vs the torch Lloyd path (``device``) from the same k-means++ seeding, on
    overlapping synthetic clusters (where the iterations matter): seconds, iterations, inertia."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans as SkKMeans

    from mmconcepts.decompose.kmeans import kmeans_plusplus, lloyd, mean_variance

    g = torch.Generator().manual_seed(seed)
    centres = 0.15 * torch.randn(k, d, generator=g)
    Z = centres[torch.randint(k, (n,), generator=g)] + torch.randn(n, d, generator=g)
    idx = kmeans_plusplus(Z, k, torch.Generator().manual_seed(seed))
    out = {"shape": [n, d], "k": k}
    t = time.perf_counter()
    sk = SkKMeans(k, init=Z[idx].numpy(), n_init=1, tol=tol, algorithm="lloyd").fit(Z.numpy())
    out["sklearn"] = {"seconds": time.perf_counter() - t, "n_iter": int(sk.n_iter_), "inertia": float(sk.inertia_)}
    Zd = Z.to(device)
    _sync(device)
    t = time.perf_counter()
    C, labels, n_iter = lloyd(Zd, Zd[idx.to(Zd.device)].clone(), tol_abs=tol * mean_variance(Zd))
    _sync(device)
    inertia = float((Zd - C[labels]).double().square().sum())
    out["torch"] = {"seconds": time.perf_counter() - t, "n_iter": n_iter, "inertia": inertia, "device": device}
    print(f"K-Means Z {n} x {d}, K = {k}: " + " | ".join(
        f"{name} {r['seconds']:.3f}s {r['n_iter']} it inertia {r['inertia']:.6e}"
        for name, r in (("sklearn (cpu)", out["sklearn"]), (f"torch ({device})", out["torch"]))))
    assert np.isfinite(inertia)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[5000])
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.5, help="noise-to-signal ratio of the synthetic data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--solvers", default="ours,overcomplete,sklearn")
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--sklearn-max-iter", type=int, default=10)
    p.add_argument("--sklearn-max-d", type=int, default=4096, help="skip scikit-learn above this many features")
    p.add_argument("--alpha", type=float, default=0.01, help="L1 weight of scikit-learn (and ours-l1)")
    p.add_argument("--features", default=None, help="also run on this feature store")
    p.add_argument("--layer", default=None)
    p.add_argument("--json", default=None, help="write all results here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, in one process, untimed (CI)")
    p.add_argument("--kmeans", action="store_true", help="time K-Means (sklearn vs torch Lloyd) instead")
    p.add_argument("--inprocess", action="store_true", help="run solvers in this process (no peak memory)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--solver", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return []
    if args.smoke:
        args.n, args.d, args.k, args.max_iter, args.sklearn_max_iter = [300], 32, 5, 30, 3
        args.inprocess, args.device = True, "cpu"
    if args.kmeans:
        rows = [bench_kmeans(n, args.d, args.k, args.device) for n in args.n]
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return rows
    solvers = [s for s in args.solvers.split(",") if s]
    bad = set(solvers) - set(SOLVERS)
    if bad:
        raise SystemExit(f"unknown solver(s) {', '.join(sorted(bad))}: choose from {', '.join(SOLVERS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            Z, _, U = synthetic(n, args.d, args.k, noise=args.noise)
            rows.append(bench_input(f"synthetic-n{n}", Z, U, args, solvers, tmp))
        if args.features:
            from mmconcepts.extract.features import load_features

            Z, _ = load_features(args.features, args.layer)
            rows.append(bench_input(f"store-{Path(args.features).name}-{args.layer}", Z, None, args, solvers, tmp))
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
