"""Extraction throughput: the reference pattern vs plain batched ``generate`` vs ``mmconcepts extract``.

All run in this one process on the same images and the same model, at each ``--batch-size``:

(a) **reference**: batch 1, greedy ``generate``, a forward hook that copies every step's hidden state to the
    CPU into a dict (the pattern of the CoX-LMM code);
(b) **generate**: plain batched greedy ``generate`` (no hook, nothing kept; the images are preprocessed in
    the loop, as a plain script does);
(c) **mmconcepts**: :func:`mmconcepts.extract.extract` at the same batch size, writing a feature store
    (images read and preprocessed by ``--num-workers`` DataLoader workers);
(d) **teacher**: :func:`mmconcepts.extract.extract` in teacher mode (one forward pass a batch).

Every generation runs exactly ``--new-tokens`` steps (``min_new_tokens = max_new_tokens``), so the lengths
match. The token of interest is whatever word the model generates most often, so (c) keeps samples. On a GPU
each pattern's peak memory (``torch.cuda.max_memory_allocated``, reset before it) is reported too.

``--arch`` builds a random-weight model of a real checkpoint's shapes (:data:`ARCHS`: ``llava-1.5-7b``,
``qwen2-vl-7b``, and ``tiny-llava`` / ``tiny-qwen2-vl`` for a CPU smoke run of the same code) on the ``meta``
device and materialises it directly on ``--device`` (:func:`build_model`; no checkpoint, nothing on disk),
with a processor of the real shapes made offline. ``--image-size 640x480`` scales the ShapesWorld scenes to
COCO's size (saved as JPEG), which matters for Qwen2-VL (tokens grow with pixels: 391 at 640 x 480).

Usage::

    python benchmarks/extract_throughput.py                      # the shipped ShapesWorld model, CPU
    python benchmarks/extract_throughput.py --arch llava-1.5-7b --device cuda --dtype bfloat16 \\
        --n 128 --n-reference 8 --batch-size 16 64 --image-size 640x480 --num-workers 8 --json llava.json
    python benchmarks/extract_throughput.py --arch tiny-qwen2-vl --n 8 --batch-size 4   # CPU smoke
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


#: The shapes of the random-weight models ``--arch`` builds: the real checkpoints' (``llava-1.5-7b``:
#: llava-hf/llava-1.5-7b-hf, CLIP ViT-L/14-336 + Llama-2-7B; ``qwen2-vl-7b``: Qwen/Qwen2-VL-7B-Instruct), and
#: tiny ones of the same families for a CPU smoke run of the same code.
ARCHS = {
    "llava-1.5-7b": dict(
        family="llava", vocab=32000,
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768),
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
        image_seq_length=576),
    "tiny-llava": dict(
        family="llava", vocab=1000,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=56, patch_size=14, projection_dim=32),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5),
        image_seq_length=16),
    "qwen2-vl-7b": dict(
        family="qwen2_vl", vocab=152064,
        vision=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        pixels=dict(shortest_edge=56 * 56, longest_edge=28 * 28 * 1280)),
    "tiny-qwen2-vl": dict(
        family="qwen2_vl", vocab=1000,
        vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        pixels=dict(shortest_edge=56 * 56, longest_edge=112 * 112)),
}
LLAVA_TEMPLATE = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                  "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}ASSISTANT:")
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]


def word_tokenizer(specials: list[str], vocab: int, **kwargs):
    """A word-level tokenizer of ``vocab`` entries (the specials, then the words ``w0``, ``w1``, ...): the real
    vocabulary size, built offline in milliseconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = specials + [f"w{i}" for i in range(vocab - len(specials))]
    unk = kwargs.pop("unk_token", specials[0])
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, padding_side="left", **kwargs)


def llava_processor(shape: dict | None = None):
    """The LLaVA-1.5 processor: ``CLIPImageProcessor`` (shortest edge 336, centre crop 336, CLIP mean/std), a
    ``LlavaProcessor`` (576 image tokens + 1) and a word-level tokenizer of the real size."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    shape = shape or ARCHS["llava-1.5-7b"]
    side = shape["vision"]["image_size"]
    tokenizer = word_tokenizer(LLAVA_SPECIALS, shape["vocab"], bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    return LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer, patch_size=shape["vision"]["patch_size"], vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)


def qwen2_vl_processor(shape: dict | None = None):
    """The Qwen2-VL processor: ``Qwen2VLImageProcessor`` (14 px patches, 2 x 2 merge, 3,136 to 1,003,520
    pixels: a 640 x 480 image gives 391 tokens), its video processor, a word-level tokenizer of the real size."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    shape = shape or ARCHS["qwen2-vl-7b"]
    v = shape["vision"]
    pixels = dict(patch_size=v["patch_size"], temporal_patch_size=v["temporal_patch_size"],
                  merge_size=v["spatial_merge_size"], size=dict(shape["pixels"]))
    tokenizer = word_tokenizer(QWEN_SPECIALS, shape["vocab"], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               unk_token="<|endoftext|>",
                               extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=QWEN_TEMPLATE)


def build_model(arch: str, device: str, dtype):
    """A randomly initialised model of ``arch`` (:data:`ARCHS`) and its processor, as a ready
    :class:`~mmconcepts.models.ModelAdapter`: built on the ``meta`` device (no memory), materialised directly
    on ``device`` in ``dtype`` (``to_empty``), then initialised there by transformers' own ``init_weights``,
    which also recomputes the non-persistent buffers (rotary frequencies, position ids) that ``to_empty``
    leaves undefined. Nothing is written to disk."""
    import torch
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              Qwen2VLConfig, Qwen2VLForConditionalGeneration)

    from mmconcepts.models.llava import LlavaAdapter
    from mmconcepts.models.qwen2_vl import Qwen2VLAdapter

    shape = ARCHS[arch]
    if shape["family"] == "llava":
        processor = llava_processor(shape)
        tok = processor.tokenizer
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(**shape["vision"]),
            text_config=LlamaConfig(**shape["text"], vocab_size=shape["vocab"] + 64, bos_token_id=tok.bos_token_id,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
            image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
            vision_feature_select_strategy="default", image_seq_length=shape["image_seq_length"])
        cls, adapter_cls = LlavaForConditionalGeneration, LlavaAdapter
    else:
        processor = qwen2_vl_processor(shape)
        tok = processor.tokenizer
        ids = tok.convert_tokens_to_ids
        config = Qwen2VLConfig(
            vision_config=shape["vision"],
            text_config=dict(shape["text"], vocab_size=shape["vocab"], eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, bos_token_id=None),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
            tie_word_embeddings=False)
        cls, adapter_cls = Qwen2VLForConditionalGeneration, Qwen2VLAdapter
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters in dtype; buffers that ask for float32 keep it
    try:
        with torch.device("meta"):
            model = cls(config)
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device=device)
    torch.manual_seed(0)
    model.init_weights()
    model.eval().requires_grad_(False)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    gc.do_sample = False
    return adapter_cls(model, processor, f"random:{arch}")


def check_buffers(arch: str) -> None:
    """The buffers of a :func:`build_model` model equal those of one constructed normally (tiny archs only)."""
    import torch

    built = build_model(arch, "cpu", torch.float32).model
    reference = type(built)(built.config)
    ours = dict(built.named_buffers())
    for name, buf in reference.named_buffers():
        if not torch.equal(ours[name].to(buf.dtype), buf):
            raise SystemExit(f"buffer {name} differs after the meta build: the materialisation is broken")


def make_images(n: int, seed: int = 0, size: tuple[int, int] | None = None):
    """ShapesWorld scenes (64 x 64), or scaled up to ``size`` (width, height), as COCO-size photos are."""
    import random

    from PIL import Image

    from mmconcepts.data.shapesworld import render, sample_scene

    rng = random.Random(seed)
    images = [render(sample_scene(rng)) for _ in range(n)]
    return images if size is None else [im.resize(size, Image.BICUBIC) for im in images]


def write_dataset(folder: Path, images, word: str, jpeg: bool = False) -> Path:
    (folder / "images").mkdir(parents=True)
    ext = "jpg" if jpeg else "png"
    with open(folder / "captions.jsonl", "w") as f:
        for i, im in enumerate(images):
            im.save(folder / "images" / f"{i}.{ext}", **({"quality": 90} if jpeg else {}))
            f.write(json.dumps({"image": f"images/{i}.{ext}", "captions": [f"a {word} here"]}) + "\n")
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


def peak_reset(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if str(device).startswith("cuda") else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model id or folder (default: the shipped ShapesWorld model)")
    p.add_argument("--arch", choices=tuple(ARCHS), default=None,
                   help="build a random-weight model of these shapes instead (on --device, in --dtype)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--n", type=int, default=64, help="images")
    p.add_argument("--n-reference", type=int, default=None, help="images for the slow reference (default: --n)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[32], help="one or more batch sizes")
    p.add_argument("--new-tokens", type=int, default=30)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of mmconcepts extract")
    p.add_argument("--image-size", default=None, help="WxH: scale the images up (e.g. 640x480, saved as JPEG)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip", default="", help="patterns to skip: reference,generate,extract,teacher")
    p.add_argument("--json", default=None, help="write the numbers here")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)

    import torch

    from mmconcepts.extract import extract
    from mmconcepts.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    skip = {s for s in args.skip.split(",") if s}
    size = tuple(int(x) for x in args.image_size.lower().split("x")) if args.image_size else None
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-"))
    timings: dict = {}
    try:
        t = time.perf_counter()
        if args.arch:
            adapter = build_model(args.arch, args.device, getattr(torch, args.dtype))
        else:
            adapter = load_model(args.model, device=args.device, dtype=args.dtype)
        timings["load_s"] = time.perf_counter() - t
        images = make_images(args.n, size=size)
        captions = adapter.caption(images[:8], max_new_tokens=args.new_tokens)
        words = Counter(w for c in captions for w in re.findall(r"(?<!\w)[A-Za-z][A-Za-z0-9]+(?!\w)", c))
        word = words.most_common(1)[0][0] if words else "circle"
        data = write_dataset(work / "data", images, word, jpeg=size is not None)
        device = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                  else f"CPU, {torch.get_num_threads()} threads")
        n_ref = args.n_reference or args.n
        rows = []

        def row(pattern, batch, n, seconds, kept=None):
            r = {"pattern": pattern, "batch_size": batch, "images": n, "seconds": seconds,
                 "images_per_s": n / seconds, "peak_gpu_mb": peak_mb(adapter.device), "kept": kept}
            rows.append(r)
            return r

        if "reference" not in skip:
            reference_pattern(adapter, images[:1], args.new_tokens)  # warm-up
            peak_reset(adapter.device)
            row("reference", 1, n_ref, reference_pattern(adapter, images[:n_ref], args.new_tokens))
        for bs in args.batch_size:
            plain_generate(adapter, images[:bs], args.new_tokens, bs)  # warm-up at this batch size
            if "generate" not in skip:
                peak_reset(adapter.device)
                row("generate", bs, args.n, plain_generate(adapter, images, args.new_tokens, bs))
            common = dict(model=adapter, layers=["norm"], batch_size=bs, num_workers=args.num_workers,
                          progress=False)
            if "extract" not in skip:
                peak_reset(adapter.device)
                start = time.perf_counter()
                manifest = extract(data, word, out=work / f"store-{bs}", keep="generated",
                                   max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **common)
                sync(adapter.device)
                row("extract", bs, args.n, time.perf_counter() - start, manifest["counts"]["kept"])
            if "teacher" not in skip:
                peak_reset(adapter.device)
                start = time.perf_counter()
                manifest = extract(data, word, out=work / f"teacher-{bs}", mode="teacher", **common)
                sync(adapter.device)
                row("teacher", bs, args.n, time.perf_counter() - start, manifest["counts"]["kept"])

        name = args.arch or adapter.model_id
        print(f"model: {name} ({args.dtype}) on {device}; {args.n} images"
              f"{f' {size[0]}x{size[1]}' if size else ''}, {args.new_tokens} new tokens, token '{word}', "
              f"{args.num_workers} loader workers; built/loaded in {timings['load_s']:.1f} s")
        labels = {"reference": "reference (batch 1, every step to CPU)", "generate": "plain batched generate",
                  "extract": "mmconcepts extract", "teacher": "mmconcepts extract --mode teacher"}
        print(f"  {'pattern':<40}{'batch':>6}{'images/s':>10}{'seconds':>9}{'peak GPU MB':>13}")
        for r in rows:
            peak = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
            print(f"  {labels[r['pattern']]:<40}{r['batch_size']:>6}{r['images_per_s']:>10.2f}{r['seconds']:>9.2f}"
                  f"{peak:>13}")
        rate = {(r["pattern"], r["batch_size"]): r["images_per_s"] for r in rows}
        ratios = {}
        for bs in args.batch_size:
            ext, gen, teach = rate.get(("extract", bs)), rate.get(("generate", bs)), rate.get(("teacher", bs))
            ref = rate.get(("reference", 1))
            if ext and ref:
                ratios[f"extract_over_reference_b{bs}"] = ext / ref
                print(f"  batch {bs}: mmconcepts / reference: {ext / ref:6.1f}x")
            if ext and gen:
                ratios[f"extract_overhead_over_generate_b{bs}"] = gen / ext - 1
                print(f"  batch {bs}: mmconcepts overhead over plain generate: {100 * (gen / ext - 1):+.1f}%")
            if ext and teach:
                ratios[f"teacher_over_extract_b{bs}"] = teach / ext
                print(f"  batch {bs}: teacher / generate-mode extract: {teach / ext:6.1f}x")
        result = {"model": name, "arch": args.arch, "dtype": args.dtype, "device": device, "n_images": args.n,
                  "image_size": list(size) if size else None, "new_tokens": args.new_tokens, "token": word,
                  "num_workers": args.num_workers, "load_s": timings["load_s"], "rows": rows, "ratios": ratios}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
