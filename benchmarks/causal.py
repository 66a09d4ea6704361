"""Causal evaluation on the demo's data: methods x controls x metrics (:mod:`mmconcepts.evaluation.causal.interventions`).

Reads (or makes, with ``mmconcepts demo --seed N``) a demo folder: the Semi-NMF concepts of the token
"circle" at layer "norm" of the shipped ShapesWorld captioner, the comparison methods its evaluation learnt
(``eval/concepts/<method>/``: PCA, K-Means, Simple) and the test feature store. For every method it steers
and ablates with each attribute concept on the same test images and prints one row per (method, control):

- ``concept``: the concept's own direction (steering and ablation);
- ``centred``: the concept's direction less its component along the mean training state;
- ``random``: a random direction of the same norm (the control: should almost never say the value);
- ``diffmean``: the difference of means of the concept's most activating training states and the rest.

Usage::

    python benchmarks/causal.py --demo /tmp/causal-demo              # seed 0 demo, already run
    python benchmarks/causal.py --seed 1 --demo /tmp/causal-demo-1   # runs the demo when the folder is absent
    python benchmarks/causal.py --demo /tmp/causal-demo --json causal-0.json --n-images 0   # all images
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONTROLS = ("concept", "centred", "random", "diffmean")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", default=None, help="demo folder (default /tmp/causal-demo-<seed>; made if absent)")
    p.add_argument("--seed", type=int, default=0, help="demo seed (and seed of the image sample, random directions)")
    p.add_argument("--methods", default="semi-nmf,pca,kmeans,simple")
    p.add_argument("--controls", default=",".join(CONTROLS))
    p.add_argument("--n-images", type=int, default=60, help="test images (0: all)")
    p.add_argument("--strength-factor", type=float, default=None, help="default: the module's")
    p.add_argument("--positions", default=None, help="default: the module's")
    p.add_argument("--layer", default=None, help="default: the dictionary's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--examples", type=int, default=3, help="caption pairs to print")
    p.add_argument("--json", default=None, help="write the full results (per concept, examples) here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mmconcepts.evaluation.causal import interventions as C
    from mmconcepts.extract.features import load_metadata
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.models import load_model

    demo = Path(args.demo or f"/tmp/causal-demo-{args.seed}")
    if not (demo / "concepts" / "grounding.json").is_file():
        print(f"running the demo (seed {args.seed}) into {demo}", flush=True)
        subprocess.run([sys.executable, "-m", "mmconcepts", "demo", "--out", str(demo), "--seed", str(args.seed),
                        "--quiet", "--overwrite"], check=True, stdout=sys.stderr)
    meta = load_metadata(demo / "features" / "test", "circle")
    adapter = load_model(None, device="cpu")
    settings = {}
    if args.strength_factor is not None:
        settings["strength_factor"] = args.strength_factor
    if args.positions is not None:
        settings["positions"] = args.positions
    if args.layer is not None:
        settings["layer"] = args.layer
    n_images = None if args.n_images == 0 else args.n_images
    controls = [c for c in args.controls.split(",") if c]
    table, full = {}, {}
    for method in [m for m in args.methods.split(",") if m]:
        folder = demo / "concepts" if method == "semi-nmf" else demo / "eval" / "concepts" / method
        cs = load_concepts(folder)
        t = time.perf_counter()
        directions = [c for c in controls if c in C.DIRECTIONS]
        results = C.causal_evaluation(cs, meta, adapter, directions=tuple(directions), n_images=n_images,
                                      seed=args.seed, **settings) if directions else {}
        for control in controls:
            if control in results:
                table[f"{method} / {control}"] = results[control]
                full[f"{method}/{control}"] = results[control]
        print(f"[{method}: {time.perf_counter() - t:.0f}s]", file=sys.stderr, flush=True)
    first = next(iter(full.values()))
    print(f"# Causal evaluation: demo seed {args.seed}, token 'circle', layer {first['layer']}, positions "
          f"{first['positions']}, strength factor {first['strength_factor']}, {first['n_images']} test images\n")
    rows = {name: {**C.metrics_row(r), "n": r["n_concepts"]} for name, r in table.items()}
    text = C.format_table(rows).splitlines()
    text[0] += " concepts |"
    text[1] += "---|"
    for i, r in enumerate(rows.values()):
        text[i + 2] += f" {r['n']} |"
    print("\n".join(text))
    main_run = full.get("semi-nmf/concept")
    if main_run and args.examples:
        print("\nexamples (semi-nmf, concept direction):")
        adds = [e for e in main_run["examples"] if e["mode"] == "add"]
        seen, picked = set(), []
        for e in adds:  # one per attribute first, then the others
            if C.concept_target(e["words"]) and C.concept_target(e["words"])[0] not in seen:
                seen.add(C.concept_target(e["words"])[0])
                picked.append(e)
        picked = (picked + [e for e in adds if e not in picked])[: args.examples]
        picked += [e for e in main_run["examples"] if e["mode"] == "ablate" and e["before"] != e["after"]][:1]
        for e in picked:
            print(f"  {e['mode']:6s} concept {e['concept']} {e['words']}\n    before: {e['before']}\n    after:  "
                  f"{e['after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(full, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
