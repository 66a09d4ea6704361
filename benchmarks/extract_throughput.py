"""Extraction throughput: the reference pattern vs plain batched ``generate`` vs ``mmconcepts extract``.

All three run in this one process on the same images and the same model:

(a) **reference**: batch 1, greedy ``generate``, a forward hook that copies every step's hidden state to the
    CPU into a dict (the pattern of the CoX-LMM code);
(b) **generate**: plain batched greedy ``generate`` (the floor: no hook, nothing kept);
(c) **mmconcepts**: :func:`mmconcepts.extract.extract` at the same batch size, writing a feature store;
(d) **teacher**: :func:`mmconcepts.extract.extract` in teacher mode (one forward pass a batch).

Every generation runs exactly ``--new-tokens`` steps (``min_new_tokens = max_new_tokens``), so the lengths
match. The token of interest is whatever word the model generates most often, so (c) keeps samples.

Usage::

    python benchmarks/extract_throughput.py                      # the shipped ShapesWorld model, CPU
    python benchmarks/extract_throughput.py --arch llava-1.5-7b --device cuda --dtype bfloat16 \\
        --n 256 --batch-size 64 --new-tokens 30                  # random-init full-size LLaVA on a GPU
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def build_llava_7b(folder: Path, dtype) -> Path:
    """A randomly initialised LLaVA-1.5-7B (CLIP ViT-L/14-336 + Llama-2-7B shapes) with a real-size processor."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<unk>", "<s>", "</s>", "<pad>", "<image>"] + [f"w{i}" for i in range(32000 - 5)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                        padding_side="left")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1,
        chat_template="{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                      "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}ASSISTANT:")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                num_attention_heads=32, vocab_size=32064, max_position_embeddings=4096),
        image_token_index=4, vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=576)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(dtype)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.generation_config.pad_token_id = 3
    model.generation_config.eos_token_id = 2
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_images(n: int, seed: int = 0):
    import random

    from mmconcepts.data.shapesworld import render, sample_scene

    rng = random.Random(seed)
    return [render(sample_scene(rng)) for _ in range(n)]


def write_dataset(folder: Path, images, word: str) -> Path:
    (folder / "images").mkdir(parents=True)
    with open(folder / "captions.jsonl", "w") as f:
        for i, im in enumerate(images):
            im.save(folder / "images" / f"{i}.png")
            f.write(json.dumps({"image": f"images/{i}.png", "captions": [f"a {word} here"]}) + "\n")
    return folder


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def reference_pattern(adapter, images, new_tokens: int) -> float:
    """Batch 1, greedy generate, every step's hidden state copied to the CPU into a dict."""
    import torch

    store: dict = {}
    module = adapter.layer_module("norm")
    handle = module.register_forward_hook(
        lambda m, a, out: store.setdefault(len(store), adapter.hidden_from_output(out).detach().cpu()))
    prompt = adapter.prompt()
    sync(adapter.device)
    start = time.perf_counter()
    try:
        for image in images:
            inputs = adapter.encode([image], [prompt])
            with torch.inference_mode():
                adapter.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                       do_sample=False)
        sync(adapter.device)
    finally:
        handle.remove()
    return time.perf_counter() - start


def plain_generate(adapter, images, new_tokens: int, batch_size: int) -> float:
    import torch

    prompt = adapter.prompt()
    sync(adapter.device)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        inputs = adapter.encode(chunk, [prompt] * len(chunk))
        with torch.inference_mode():
            adapter.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    sync(adapter.device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model id or folder (default: the shipped ShapesWorld model)")
    p.add_argument("--arch", choices=("llava-1.5-7b",), default=None, help="build a random full-size model instead")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--n", type=int, default=64, help="images")
    p.add_argument("--n-reference", type=int, default=None, help="images for the slow reference (default: --n)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=30)
    args = p.parse_args(argv)

    import torch

    from mmconcepts.extract import extract
    from mmconcepts.models import load_model

    work = Path(tempfile.mkdtemp(prefix="mmc-bench-"))
    try:
        model = args.model
        if args.arch:
            model = str(build_llava_7b(work / "model", getattr(torch, args.dtype)))
        adapter = load_model(model, device=args.device, dtype=args.dtype)
        images = make_images(args.n)
        captions = adapter.caption(images[:8], max_new_tokens=args.new_tokens)
        words = Counter(w for c in captions for w in re.findall(r"(?<!\w)[A-Za-z]{2,}(?!\w)", c))
        word = words.most_common(1)[0][0] if words else "circle"
        data = write_dataset(work / "data", images, word)
        plain_generate(adapter, images[: args.batch_size], args.new_tokens, args.batch_size)  # warm-up

        n_ref = args.n_reference or args.n
        t_ref = reference_pattern(adapter, images[:n_ref], args.new_tokens)
        t_gen = plain_generate(adapter, images, args.new_tokens, args.batch_size)
        sync(adapter.device)
        start = time.perf_counter()
        manifest = extract(data, word, out=work / "store", model=adapter, layers=["norm"], keep="generated",
                           batch_size=args.batch_size, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, progress=False)
        sync(adapter.device)
        t_ext = time.perf_counter() - start
        start = time.perf_counter()
        extract(data, word, out=work / "teacher", model=adapter, layers=["norm"], mode="teacher",
                batch_size=args.batch_size, progress=False)
        sync(adapter.device)
        t_teacher = time.perf_counter() - start

        rates = {"reference (batch 1, every step to CPU)": n_ref / t_ref,
                 f"plain generate (batch {args.batch_size})": args.n / t_gen,
                 f"mmconcepts extract (batch {args.batch_size})": args.n / t_ext,
                 f"mmconcepts extract --mode teacher (batch {args.batch_size})": args.n / t_teacher}
        device = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                  else f"CPU, {torch.get_num_threads()} threads")
        print(f"model: {adapter.model_id if not args.arch else args.arch} ({args.dtype}) on {device}; "
              f"{args.n} images, {args.new_tokens} new tokens, token '{word}' kept {manifest['counts']['kept']}")
        for name, rate in rates.items():
            print(f"  {name:<48} {rate:8.2f} images/s")
        ref, gen, ext = list(rates.values())[:3]
        print(f"  mmconcepts / reference: {ext / ref:6.1f}x")
        print(f"  mmconcepts overhead over plain generate: {100 * (gen / ext - 1):+.1f}%")
        print(f"  teacher / generate-mode extract: {rates[list(rates)[3]] / ext:6.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
