"""Several words of interest in one pass: the cost of extracting 5 words at once vs one word vs 5 passes.

On the same model and the same images, in this one process:

(a) **single**: one :func:`mmconcepts.extract.extract` of one word (``circle``);
(b) **multi**: one extraction of 5 words at once (``circle,square,triangle,star,red``: one caption per image,
    every word's rows kept from the same pass);
(c) **separate**: 5 single-word extractions, one after the other (what extracting 5 words cost before).

Every generation runs exactly ``--new-tokens`` steps (``min_new_tokens = max_new_tokens``) so the passes do the
same work. After one uncounted warm-up pass, single and multi run ``--repeats`` times (interleaved) and the
best time counts, which is what a shared machine allows. The target: multi within 10% of single (5 words
cost about 1/5 of 5 passes).

Usage::

    python benchmarks/multi_token.py                          # the shipped ShapesWorld captioner, CPU
    python benchmarks/multi_token.py --n 200 --batch-size 32 --json multi.json
    python benchmarks/multi_token.py --model DIR --device cuda --dtype bfloat16 --words dog,cat,car,man,red
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed_extract(adapter, data, words: str, out: Path, args) -> tuple[float, dict]:
    from mmconcepts.extract import extract

    shutil.rmtree(out, ignore_errors=True)
    sync(adapter.device)
    start = time.perf_counter()
    manifest = extract(data, words, out=out, model=adapter, layers=args.layers.split(","), keep="generated",
                       batch_size=args.batch_size, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                       num_workers=args.num_workers, progress=False)
    sync(adapter.device)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds, manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model id or folder (default: the shipped ShapesWorld captioner)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--data", default=None, help="a dataset to read (default: --n ShapesWorld images)")
    p.add_argument("--n", type=int, default=200, help="ShapesWorld images to write")
    p.add_argument("--words", default="circle,square,triangle,star,red", help="the words; the first is 'single'")
    p.add_argument("--layers", default="norm")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=30)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 1 on the CPU: a shared machine oversubscribed by torch's own "
                        "threads runs many times slower; on a GPU left alone)")
    p.add_argument("--repeats", type=int, default=2, help="runs of single and multi, interleaved (best counts)")
    p.add_argument("--no-separate", action="store_true", help="skip the 5 separate passes")
    p.add_argument("--json", default=None, help="write the numbers here")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)

    import torch

    from mmconcepts.data.readers import open_dataset
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.models import load_model

    if args.threads or not str(args.device).startswith("cuda"):
        torch.set_num_threads(args.threads or 1)
    words = [w.strip() for w in args.words.split(",") if w.strip()]
    work = Path(tempfile.mkdtemp(prefix="mmc-multi-"))
    try:
        data = Path(args.data) if args.data else write_dataset(work / "data", args.n, seed=0)
        n = len(open_dataset(data))
        adapter = load_model(args.model, device=args.device, dtype=args.dtype)
        # warm-up: one uncounted pass over the same images (every batch shape, allocator, kernels)
        timed_extract(adapter, data, words[0], work / "warm", args)
        single, multi, counts = [], [], {}
        for _ in range(args.repeats):
            t, m = timed_extract(adapter, data, words[0], work / "single", args)
            single.append(t)
            counts["single"] = m["counts"]["kept"]
            t, m = timed_extract(adapter, data, ",".join(words), work / "multi", args)
            multi.append(t)
            counts["multi"] = {w: c["kept"] for w, c in m["counts"]["tokens"].items()}
        separate = None
        if not args.no_separate:
            separate, counts["separate"] = 0.0, {}
            for w in words:
                t, m = timed_extract(adapter, data, w, work / f"sep-{w}", args)
                separate += t
                counts["separate"][w] = m["counts"]["kept"]
        t_single, t_multi = min(single), min(multi)
        rates = {"single": n / t_single, "multi": n / t_multi}
        if separate is not None:
            rates["separate"] = n / separate
        device = (torch.cuda.get_device_name() if str(adapter.device).startswith("cuda")
                  else f"CPU, {torch.get_num_threads()} threads")
        result = {
            "model": adapter.model_id, "device": device, "dtype": args.dtype, "n_images": n,
            "threads": torch.get_num_threads(), "batch_size": args.batch_size, "new_tokens": args.new_tokens,
            "num_workers": args.num_workers,
            "words": words, "repeats": args.repeats,
            "seconds": {"single": single, "multi": multi, "separate_total": separate},
            "images_per_s": rates,
            "ratio_multi_over_single": rates["multi"] / rates["single"],
            "ratio_multi_over_separate": (rates["multi"] / rates["separate"]) if separate else None,
            "kept": counts,
        }
        print(f"model: {adapter.model_id} ({args.dtype}) on {device}; {n} images, batch {args.batch_size}, "
              f"{args.new_tokens} new tokens, {args.num_workers} loader workers, best of {args.repeats}")
        print(f"  {'configuration':<44}{'seconds':>9}{'images/s':>10}")
        print(f"  {'single: ' + words[0]:<44}{t_single:>9.2f}{rates['single']:>10.2f}")
        print(f"  {'multi: ' + ','.join(words) + ' (one pass)':<44}{t_multi:>9.2f}{rates['multi']:>10.2f}")
        if separate is not None:
            print(f"  {f'separate: {len(words)} single-word passes':<44}{separate:>9.2f}{rates['separate']:>10.2f}")
        ratio = result["ratio_multi_over_single"]
        print(f"  multi / single images/s: {ratio:.3f} ({100 * (ratio - 1):+.1f}%; target within 10%: "
              f"{'met' if ratio >= 0.9 else 'NOT met'})")
        if separate is not None:
            print(f"  multi / separate images/s: {result['ratio_multi_over_separate']:.2f}x "
                  f"({len(words)} words for {1 / result['ratio_multi_over_separate']:.2f} of "
                  f"{len(words)} passes' time)")
        print(f"  kept: single {counts['single']}, multi {counts['multi']}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
