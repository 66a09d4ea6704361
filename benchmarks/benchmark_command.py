"""``mmconcepts benchmark`` with one torch thread vs torch's default threads: wall time per stage.

Runs the same benchmark twice, each in a fresh subprocess into a fresh folder (``--threads 1``, then
``--threads N``, N = torch's default, the machine's cores), and prints each run's wall time, the stages'
seconds from its ``benchmark.json`` (extraction, learn, ground, evaluate, extended, baselines) and the
ratio. The numbers of the two runs are the same but for Adam-fitted methods (topk-sae), whose float sums
depend on the thread count. The default is a quarter of the default benchmark (one seed); ``--full`` runs
the default benchmark itself (4 tokens x 3 seeds x 6 methods at K = 20).

Usage::

    python benchmarks/benchmark_command.py               # 4 tokens x 1 seed x 6 methods
    python benchmarks/benchmark_command.py --full --json threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(threads: int, out: Path, extra: list[str]) -> dict:
    """One ``mmconcepts benchmark`` in a subprocess; its wall time and stage seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmconcepts", "benchmark", "--out", str(out), "--threads", str(threads),
                    "--quiet", *extra], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    timings = json.loads((out / "benchmark.json").read_text())["timings"]
    extraction = round(sum(timings["extraction_s"].values()), 1)
    return {"threads": threads, "wall_s": round(wall, 1), "extraction_s": extraction,
            **{f"{k}_s": v for k, v in timings["cells_s"].items()}}


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the default benchmark (3 seeds) instead of one seed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="the thread count to compare with one thread (default torch's, the cores)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    extra = [] if args.full else ["--seeds", "0"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, args.threads):
            rows.append(run(threads, Path(tmp) / f"threads-{threads}", extra))
            print(json.dumps(rows[-1]), flush=True)
    one, many = rows
    print(f"wall: {one['wall_s']} s with 1 thread, {many['wall_s']} s with {args.threads}: "
          f"{many['wall_s'] / one['wall_s']:.2f}x (load average at the end {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "full": args.full}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
