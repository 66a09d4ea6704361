"""Causal evaluation of image-token concepts on the demo's setup, layer by layer
(:mod:`mmconcepts.evaluation.causal.image_tokens`).

Makes (or reuses) under ``--root``: ShapesWorld train n=300 (seed ``2 s``) and test n=60 (seed ``2 s + 1``; seed
0: 0 and 1, the demo's), the image-token feature stores of the token (``--token``, default "circle") at layers
0-3 of the shipped captioner (``extract --positions image``, teacher mode) and Semi-NMF K=20 concepts at each
layer (grounded).
Then, per layer, it ablates each concept with a target (the value its top training patches lie on:
:func:`mmconcepts.evaluation.causal.image_tokens.patch_targets`) in the image tokens (where it is active, and
over the token object's patches) and steers with it at the token object's patches, with the
random, centred and diffmean controls, and prints one row per (layer, ablate_where, direction).

Usage::

    python benchmarks/causal_image_tokens.py --seed 0                  # the table (about 10 min on 2 cores)
    python benchmarks/causal_image_tokens.py --seed 0 --factors 1,2,4,8 --directions concept,random --where active
    python benchmarks/causal_image_tokens.py --seed 1 --json causal-image-1.json
    python benchmarks/causal_image_tokens.py --seed 0 --layers vision.3 --root /tmp/causal-vis-0   # the vision tower
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

COLUMNS = ("n_concepts", "steering_success", "ablation_success", "specificity", "fluency")


def prepare(root: Path, seed: int, layers: list[str], n_concepts: int, adapter, token: str = "circle"
            ) -> dict[str, Path]:
    """The data, stores and concepts folders under ``root`` (each made only when absent)."""
    from mmconcepts.concepts import ground
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.store import read_manifest

    for split, n, s in (("train", 300, 2 * seed), ("test", 60, 2 * seed + 1)):
        if not (root / split / "captions.jsonl").is_file():
            write_dataset(root / split, n=n, seed=s, split=split)
        store = root / f"features-{split}"
        if not (store / "manifest.json").is_file() or not set(layers) <= set(read_manifest(store)["layers"]):
            extract(root / split, token, out=root / f"features-{split}", model=adapter, layers=layers,
                    positions="image", mode="teacher", batch_size=32, progress=False, overwrite=True)
    folders = {}
    for layer in layers:
        out = root / f"concepts-{layer}"
        if not (out / "grounding.json").is_file():
            learn(root / "features-train", layer, method="semi-nmf", n_concepts=n_concepts, out=out, seed=seed,
                  overwrite=True)
            ground(out, model=adapter)
        folders[layer] = out
    return folders


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="data seeds 2s / 2s+1, Semi-NMF seed, random directions")
    p.add_argument("--root", default=None, help="working folder (default /tmp/causal-image-<seed>, with a token "
                   "other than circle /tmp/causal-image-<token>-<seed>)")
    p.add_argument("--token", default="circle", help="the word of interest (a shape: the token object is the "
                   "first object of that shape)")
    p.add_argument("--layers", default="0,1,2,3")
    p.add_argument("--k", type=int, default=20, help="concepts per layer")
    p.add_argument("--directions", default="concept,random,centred,diffmean")
    p.add_argument("--where", default="active,object", help="ablate_where modes (the controls run with the first)")
    p.add_argument("--factors", default=None, help="image strength factors (default: the module's)")
    p.add_argument("--n-images", type=int, default=60, help="test images (at most; 0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write every row (and per-concept rows) here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.evaluation.causal import interventions as C
    from mmconcepts.evaluation.causal.settings import DEFAULT_IMAGE_STRENGTH_FACTOR
    from mmconcepts.extract.features import load_metadata
    from mmconcepts.models import load_model

    suffix = "" if args.token == "circle" else f"{args.token}-"
    root = Path(args.root or f"/tmp/causal-image-{suffix}{args.seed}")
    layers = args.layers.split(",")
    adapter = load_model(None, device="cpu")
    start = time.time()
    folders = prepare(root, args.seed, layers, args.k, adapter, args.token)
    print(f"data, stores and concepts ready in {time.time() - start:.0f} s ({root})", flush=True)
    meta = load_metadata(root / "features-test", args.token)
    factors = [float(f) for f in args.factors.split(",")] if args.factors else [DEFAULT_IMAGE_STRENGTH_FACTOR]
    directions = tuple(args.directions.split(","))
    header = ("layer", "ablate_where", "factor", "direction", *COLUMNS)
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    rows = []
    for layer in layers:
        cs = load_concepts(folders[layer])
        for factor in factors:
            for n, where in enumerate(args.where.split(",")):
                t = time.time()
                results = C.causal_evaluation(cs, meta, adapter, directions=directions if n == 0 else ("concept",),
                                              ablate_where=where, image_strength_factor=factor, seed=args.seed,
                                              n_images=args.n_images or None)
                for direction, scores in results.items():
                    row = scores.to_json()
                    cells = [layer, where if direction == "concept" else "–", f"{factor:g}", direction]
                    cells += [str(row[c]) if c == "n_concepts" else
                              (f"{row[c]:.3f}" if c in row else "–") for c in COLUMNS]
                    print("| " + " | ".join(cells) + " |", flush=True)
                    rows.append({"layer": layer, "ablate_where": where, "factor": factor, "seed": args.seed,
                                 **{k: v for k, v in row.items() if k != "examples"}})
                print(f"<!-- layer {layer}, {where}, factor {factor:g}: {time.time() - t:.0f} s, "
                      f"{results['concept'].n_images} images -->", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
