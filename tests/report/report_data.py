"""A small fake concepts folder and evaluation folder, laid out as docs/ARCHITECTURE.md describes.

The captions and words include HTML/JS injection payloads (SCRIPT, ATTR) that the report must escape.
"""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = "<script>window.__pwned=1</script>"
ATTR = '"><img src=x onerror="window.__pwned=2">'

COLORS = {"red": (220, 38, 38), "blue": (37, 99, 235), "green": (22, 163, 74), "yellow": (234, 179, 8)}


def _shape(path: Path, shape: str, color: str, size: int = 64) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(im)
    box = (14, 14, size - 14, size - 14)
    fill = COLORS[color]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(size // 2, 10), (size - 10, size - 12), (10, size - 12)], fill=fill)
    im.save(path)
    return path


def _photo(path: Path) -> Path:
    from PIL import Image

    im = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    im.save(path, quality=90)
    return path


def make_folders(root: Path, *, with_eval: bool = True) -> tuple[Path, Path | None]:
    """Write ``root/concepts`` (and ``root/eval``); return their paths."""
    import torch
    from safetensors.torch import save_file

    images = root / "images"
    images.mkdir(parents=True)
    pool = []
    for i, (shape, color) in enumerate([("circle", "red"), ("square", "blue"), ("triangle", "green"),
                                        ("circle", "yellow"), ("square", "red"), ("triangle", "blue"),
                                        ("circle", "green"), ("square", "yellow")]):
        pool.append((_shape(images / f"{i:03d}.png", shape, color), f"a {color} {shape}"))
    photo = _photo(images / "photo.jpg")

    def entry(n, k, caption=None, path=None):
        p, c = pool[n % len(pool)]
        return {"id": f"img-{n}", "image": str(path or p), "caption": caption or c, "activation": 3.0 - 0.4 * k}

    concepts = [
        {"index": 0, "words": [{"word": w, "score": s} for w, s in
                               [("red", 3.2), ("crimson", 2.4), ("circle", 1.9), ("round", 1.1), ("ruby", 0.6)]],
         "images": [entry(n, k) for k, n in enumerate([0, 4, 3, 6, 1])]},
        {"index": 1, "words": [{"word": w, "score": s} for w, s in
                               [("blue", 2.8), ("square", 2.1), (ATTR, 1.5), ("box", 0.9)]],
         "images": [entry(1, 0, caption=SCRIPT), entry(5, 1, caption=ATTR)]
                   + [entry(n, k + 2) for k, n in enumerate([4, 7, 2])]},
        {"index": 2, "words": [{"word": w, "score": s} for w, s in
                               [("green", 2.5), ("triangle", 2.2), ("circle", 0.7), ("pointy", 0.5)]],
         "images": [entry(2, 0), entry(6, 1), entry(5, 2, path=images / "gone.png"), entry(0, 3), entry(3, 4)]},
        {"index": 3, "words": [{"word": w, "score": s} for w, s in
                               [("photo", 1.8), ("gradient", 1.2), ("grey", 1.0), ("red", 0.3)]],
         "images": [entry(0, 0, caption="a grey gradient", path=photo)] + [entry(n, k + 1) for k, n in
                                                                            enumerate([7, 1, 2, 4])]},
    ]
    cdir = root / "concepts"
    cdir.mkdir()
    (cdir / "grounding.json").write_text(json.dumps({"decode": "unembedding of the concept direction",
                                                     "concepts": concepts}))
    (cdir / "summary.json").write_text(json.dumps({
        "method": "semi-nmf", "layer": "3", "token": "shape", "model": "mmconcepts/shapesworld-llava",
        "features": str(root / "features"), "n_samples": 60, "n_concepts": 4, "hidden_size": 32,
        "relative_error": 0.2371, "sparsity": 0.61, "n_iter": 120, "seconds": 1.8}))
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(60, 4, generator=g) * 1.5 + 0.3)
    save_file({"activations": acts.contiguous()}, str(cdir / "activations.safetensors"))
    (cdir / "dictionary.json").write_text(json.dumps({"method": "semi-nmf", "n_concepts": 4}))
    if not with_eval:
        return cdir, None

    edir = root / "eval"
    edir.mkdir()
    full = ("overlap", "clipscore_top1", "clipscore_top3", "bertscore_top1", "bertscore_top3",
            "grounding_precision_top1", "grounding_precision_top3", "coverage", "purity")

    def row(base, skip=()):
        return {m: round(base + 0.03 * i, 4) for i, m in enumerate(full) if m not in skip}

    metrics = {"token": "shape", "layer": "3", "n_test": 40, "n_train": 60, "n_concepts": 4,
               "model": "mmconcepts/shapesworld-llava", "main_method": "semi-nmf",
               "methods": {"semi-nmf": row(0.52), "pca": row(0.47, skip=("coverage",)),
                           "kmeans": row(0.50), "simple": row(0.41, skip=("purity",))},
               "baselines": {"rnd-words": row(0.2, skip=("coverage", "purity", "overlap")),
                             "noise-imgs": row(0.3, skip=("coverage", "purity", "overlap")),
                             "gt-captions": {"clipscore_top1": 0.91, "bertscore_top1": 0.95}}}
    metrics["methods"]["semi-nmf"]["overlap"] = 0.08
    (edir / "metrics.json").write_text(json.dumps(metrics))
    (edir / "overlap.json").write_text(json.dumps({"semi-nmf": [[1, 0.25, 0.25, 0.25], [0.2, 1, 0, 0],
                                                                 [0.2, 0, 1, 0], [0.2, 0, 0, 1]]}))
    expl = []
    for n, (p, caption) in enumerate(pool[:3]):
        expl.append({"id": f"test-{n}", "image": str(p), "caption": SCRIPT if n == 1 else caption,
                     "references": [caption, f"{caption} on a plain background"],
                     "concepts": [{"index": k, "activation": 2.5 - 0.7 * j,
                                   "words": [w["word"] for w in concepts[k]["words"]],
                                   # mmconcepts evaluate stores bare image paths; dicts are accepted too
                                   "images": [im["image"] for im in concepts[k]["images"][:3]] if n == 0
                                   else concepts[k]["images"][:3]}
                                  for j, k in enumerate([n, (n + 1) % 4, (n + 2) % 4])]})
    (edir / "explanations.json").write_text(json.dumps(expl))
    layers = ["0", "1", "2", "3", "norm"]  # as mmconcepts sweep writes it: the swept method under its name
    (edir / "sweep.json").write_text(json.dumps({"method": "semi-nmf", "token": "shape", "layers": layers,
                                                 "metrics": {
        name: {"grounding_precision_top1": [0.2 + 0.1 * i + d for i in range(5)],
               "clipscore_top1": [0.5 + 0.02 * i - d for i in range(5)],
               "bertscore_top1": [None] * 5,
               "overlap": [0.3 - 0.04 * i + d for i in range(5)] if name == "semi-nmf" else [None] * 5,
               "coverage": [0.5 + 0.05 * i for i in range(5)] if name == "semi-nmf" else [None] * 5}
        for name, d in (("semi-nmf", 0.0), ("rnd-words", -0.15))}}))
    return cdir, edir
