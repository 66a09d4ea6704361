"""Concept maps on the demo's data: the pointing game and energy inside (methods x baselines), their cost on
the toy, and what they cost on LLaVA-1.5-7B.

Reads (or makes, with ``mmconcepts demo --seed N``) demo folders: the Semi-NMF concepts of the token "circle"
at layer "norm" of the shipped ShapesWorld captioner and the test feature store. For every test image whose
first circle is known it maps the image's top-1 concept with each method and variant, scores the maps against
the circle (:mod:`mmconcepts.evaluation.attribution.map_scores`) and prints one row per method and baseline:

- ``attribution``: the default (blank-image reference, the gradient halfway: integrated gradients with one
  midpoint), and its variants ``grad x input`` (zero reference, gradient at the input: the textbook method),
  ``blank at input`` (blank reference, gradient at the input), ``zero 1 step`` and ``blank 4 steps``;
- ``occlusion`` (median-colour masks, one batched pass an image) and ``projection``;
- the baselines ``centre``, ``random-patch`` (exact expectations) and ``object-mask`` (each cell's share inside
  the circle: the best a map on the 8 x 8 token grid can do).

``--estimate-7b`` counts the FLOPs of each method on a random-init LLaVA-1.5-7B (CLIP ViT-L/14-336, Vicuna-7B,
576 image tokens + 40 text tokens) built on the meta device (no weights, no GPU) with
``torch.utils.flop_counter``, and converts them to seconds at an assumed sustained throughput.

Usage::

    python benchmarks/maps.py --demo /tmp/maps-demo-0 --demo /tmp/maps-demo-1 --demo /tmp/maps-demo-2
    python benchmarks/maps.py --seeds 0,1,2              # /tmp/maps-demo-<seed>, made when absent
    python benchmarks/maps.py --estimate-7b --tflops 150
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def variants():
    from mmconcepts.attribution import MapSettings

    return {"attribution": MapSettings("attribution"),
            "attribution: grad x input": MapSettings("attribution", baseline="zero", steps=0),
            "attribution: blank at input": MapSettings("attribution", baseline="blank", steps=0),
            "attribution: zero 1 step": MapSettings("attribution", baseline="zero", steps=1),
            "attribution: blank 4 steps": MapSettings("attribution", baseline="blank", steps=4),
            "occlusion": MapSettings("occlusion"),
            "projection": MapSettings("projection")}


#: Passes of one map (one image, one concept) on the model, as the code runs them ("blank": the blank image
#: through the vision tower and projector only, the pass stopped at the decoder).
PASSES = {"attribution": "blank + 1 fwd + 1 fwd/bwd",
          "attribution: grad x input": "1 fwd/bwd",
          "attribution: blank at input": "blank + 1 fwd/bwd",
          "attribution: zero 1 step": "2 fwd + 1 bwd",
          "attribution: blank 4 steps": "blank + 5 fwd + 4 bwd",
          "occlusion": "1 batched fwd of 65 images",
          "projection": "1 fwd"}


def evaluate_demo(demo: Path, names, n_images):
    import torch

    from mmconcepts.evaluation.attribution.heatmaps import heatmap_evaluation
    from mmconcepts.extract.features import load_features
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.models import load_model

    cs = load_concepts(demo / "concepts")
    Z, meta = load_features(demo / "features" / "test", cs.summary["layer"], cs.token)
    adapter = load_model(None, device="cpu")
    chosen = {k: v for k, v in variants().items() if k in names}
    with torch.no_grad():
        activations = cs.encode(Z)
    return heatmap_evaluation(cs, meta, activations, adapter, chosen, n_images=n_images).to_json()


def estimate_7b(tflops: float) -> dict:
    """FLOPs (TFLOP) of each method for one map on LLaVA-1.5-7B, and seconds at ``tflops`` sustained."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=576, projector_hidden_act="gelu")
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    n_params = sum(p.numel() for p in model.parameters())
    length = 576 + 40  # image tokens + prompt and caption prefix
    core = model.model
    pixels = torch.zeros(1, 3, 336, 336, device="meta")
    with FlopCounterMode(display=False) as counter:
        features = core.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        core.multi_modal_projector(features)
    vision_flops = counter.get_total_flops()
    E = torch.zeros(1, length, 4096, device="meta", requires_grad=True)
    mask = torch.zeros(1, 1, length, length, device="meta")
    positions = torch.arange(length, device="meta")[None]
    with FlopCounterMode(display=False) as counter:
        hidden = core.language_model(inputs_embeds=E, attention_mask=mask, position_ids=positions,
                                     use_cache=False).last_hidden_state
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        torch.autograd.grad(hidden[:, -1].sum(), E)  # to the embeddings only: no weight gradients
    backward = counter.get_total_flops()
    cost = {"attribution": 3 * vision_flops + 2 * forward + backward,  # blank, input, halfway
            "attribution: grad x input": vision_flops + forward + backward,
            "occlusion": 577 * (vision_flops + forward),
            "projection": vision_flops + forward}
    return {"params_billion": round(n_params / 1e9, 3), "tokens": length,
            "vision_tflop": round(vision_flops / 1e12, 3), "decoder_forward_tflop": round(forward / 1e12, 3),
            "decoder_backward_tflop": round(backward / 1e12, 3),
            "methods": {k: {"tflop": round(v / 1e12, 2), "seconds": round(v / (tflops * 1e12), 3)}
                        for k, v in cost.items()}, "assumed_tflops": tflops}


def _table(results: dict, names) -> str:
    seeds = list(results)
    head = "| map | " + " | ".join(f"pointing {s}" for s in seeds) + " | " + \
        " | ".join(f"energy {s}" for s in seeds) + " | s / image (toy, CPU) | passes per map |"
    lines = [head, "|---|" + "---|" * (2 * len(seeds) + 2)]
    rows = list(names) + ["centre", "random-patch", "object-mask"]
    for name in rows:
        cells = []
        for metric in ("pointing_game", "energy_inside"):
            for s in seeds:
                r = results[s]["methods"].get(name) or results[s]["baselines"].get(name) or {}
                cells.append(f"{r[metric]:.3f}" if metric in r else "–")
        secs = [results[s]["methods"][name]["seconds_per_image"] for s in seeds if name in results[s]["methods"]]
        cells.append(f"{sum(secs) / len(secs):.3f}" if secs else "–")
        cells.append(PASSES.get(name, "–"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="append", default=[], help="a demo folder (repeat for several seeds)")
    p.add_argument("--seeds", default=None, help="comma-separated demo seeds: /tmp/maps-demo-<seed>, made if absent")
    p.add_argument("--methods", default=",".join(PASSES), help="rows to compute (default all)")
    p.add_argument("--n-images", type=int, default=0, help="test images per demo (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--estimate-7b", action="store_true", help="also count the FLOPs on LLaVA-1.5-7B")
    p.add_argument("--tflops", type=float, default=150.0,
                   help="sustained bf16 TFLOP/s for the 7B estimate (default 150: about half an A100's peak)")
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    demos = [Path(d) for d in args.demo]
    if args.seeds:
        for seed in args.seeds.split(","):
            demo = Path(f"/tmp/maps-demo-{seed}")
            if not (demo / "concepts" / "grounding.json").is_file():
                print(f"running the demo (seed {seed}) into {demo}", flush=True)
                subprocess.run([sys.executable, "-m", "mmconcepts", "demo", "--out", str(demo), "--seed", seed,
                                "--quiet", "--overwrite"], check=True, stdout=sys.stderr)
            demos.append(demo)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    out = {"demos": {}}
    for demo in demos:
        manifest = json.loads((demo / "features" / "test" / "manifest.json").read_text())
        label = f"seed {json.loads((demo / 'metrics.json').read_text()).get('settings', {}).get('seed', '?')}" \
            if (demo / "metrics.json").is_file() else demo.name
        start = time.perf_counter()
        result = evaluate_demo(demo, names, args.n_images or None)
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["model"] = manifest.get("model")
        out["demos"][label] = result
        print(f"{demo}: {result['n_images']} test images mapped ({result['n_skipped']} without a known circle or "
              f"token), {result['seconds']} s", flush=True)
    if out["demos"]:
        print(_table(out["demos"], names))
    if args.estimate_7b:
        out["llava_1_5_7b"] = est = estimate_7b(args.tflops)
        print(f"\nLLaVA-1.5-7B ({est['params_billion']} B parameters, {est['tokens']} tokens): vision tower "
              f"{est['vision_tflop']} TFLOP, decoder forward {est['decoder_forward_tflop']} TFLOP, backward to the "
              f"embeddings {est['decoder_backward_tflop']} TFLOP; at {args.tflops:g} TFLOP/s:")
        for name, row in est["methods"].items():
            print(f"  {name:<28} {row['tflop']:>9.2f} TFLOP  {row['seconds']:>8.3f} s per map")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
