"""Grounding memory: peak RSS of decoding concepts into words with the whole model vs the head only.

Builds once (random init, offline) a LLaVA-architecture model -- a Llama decoder 2048 wide x 11 layers,
MLP 5632, vocabulary 32,000 (about 2.8 GB in float32) behind a tiny CLIP tower -- and saves it with
``save_pretrained`` (1 GB shards, as hub checkpoints are), once stored in float32 and once in float16 (as
``llava-hf/llava-1.5-7b-hf`` is; ``--stored``). Then, each in a fresh subprocess so that the peaks do not
mix (the parent stays small: Linux carries a parent's peak into the child at ``exec``), it measures the peak
resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, and ``VmHWM`` as a cross-check) of

(a) **full**: :func:`mmconcepts.models.load_model` (``device="cpu"``, ``dtype="float32"``), then
    :func:`mmconcepts.concepts.decoding.concept_scores` of ``--n-concepts`` random concepts with the effect
    decoding (the path grounding took before :func:`~mmconcepts.models.head.load_head`);
(b) **head**: :func:`mmconcepts.models.head.load_head`, then the same scores;

prints both peaks, the RSS right after the imports, the model's float32 size and the ratios, and checks that
the two give the same scores.

Measured here (2-core CPU, transformers 5.24, torch 2.14; float32 size 2,803 MB, imports alone 515 MB)::

    stored    (a) load_model   (b) load_head   (a)/(b)
    float32        1,060 MB        1,053 MB      1.0x   transformers maps the file: untouched weights stay on disk
    float16        4,795 MB        1,161 MB      4.1x   converting to float32 materialises every weight

So with a checkpoint loaded in its own dtype on the CPU, ``load_model`` already costs only the pages it
touches (the unembedding and norm); stored in another dtype -- the usual float16/bfloat16 hub checkpoint read
in float32 -- or placed on a GPU (there in GPU memory), it costs the whole model, and ``load_head`` the head alone.

Usage::

    python benchmarks/grounding_memory.py --smoke              # a model of a few MB: a quick check
    python benchmarks/grounding_memory.py                      # the 2.8 GB model in a temporary folder
    python benchmarks/grounding_memory.py --workdir ~/.cache/mmconcepts-bench   # build once, reuse after
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

FULL = dict(hidden_size=2048, num_hidden_layers=11, intermediate_size=5632, num_attention_heads=16,
            num_key_value_heads=16, vocab_size=32000)
SMOKE = dict(hidden_size=128, num_hidden_layers=2, intermediate_size=344, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=4096)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8, projection_dim=64)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
TEMPLATE = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
            "{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
            "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def rss_mb() -> float:
    """Peak RSS of this process so far, in MB (``ru_maxrss`` is KiB on Linux, bytes on macOS).

    Linux carries the parent's peak into a child at ``exec``, so the parent of the measurements stays small:
    it never imports torch nor builds the model before they are done (the build runs in its own process).
    """
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def hwm_mb() -> float | None:
    """``VmHWM`` of ``/proc/self/status`` (the peak RSS of this process's own memory map), in MB; Linux only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def folder_name(text: dict) -> str:
    return "llava-h{hidden_size}-l{num_hidden_layers}-i{intermediate_size}-v{vocab_size}-{stored}".format(**text)


def build(folder: Path, text: dict, shard_size: str) -> Path:
    """A randomly initialised LLaVA with decoder ``text`` (``stored``: the dtype it is saved in) and a
    word-level tokenizer of ``vocab_size`` words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    text = dict(text)
    stored = getattr(torch, text.pop("stored"))
    words = SPECIALS + [f"w{i}" for i in range(text["vocab_size"] - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                        padding_side="left")
    side = VISION["image_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer, patch_size=VISION["patch_size"], vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1, chat_template=TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=LlamaConfig(**text, max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=1,
                                eos_token_id=2, pad_token_id=3),
        image_token_index=4, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=(side // VISION["patch_size"]) ** 2, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):  # norms near 1, as trained ones are
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.normal_(0, 0.02, generator=generator)
    # to_empty leaves the buffers undefined: they are all non-persistent (rotary frequencies, position ids),
    # so not saved; loading builds them afresh
    assert not any(name in dict(model.state_dict()) for name, _ in model.named_buffers())
    model = model.to(stored)
    model.generation_config.pad_token_id = 3
    model.generation_config.eos_token_id = 2
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size=shard_size)
    processor.save_pretrained(folder)
    (folder / "DONE").write_text(json.dumps(dict(text, stored=str(stored))))
    return folder


def float32_bytes(folder: Path) -> int:
    """4 bytes per stored parameter, from the safetensors headers (read as JSON: no torch in this process)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        for key, entry in header.items():
            if key != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                total += 4 * n
    return total


def child(mode: str, folder: str, out: str, n_concepts: int, text: dict | None = None, shard_size: str = "") -> None:
    """One measurement in this (fresh) process; writes the numbers to ``out`` and the scores next to it."""
    if mode == "build":
        build(Path(folder), text, shard_size)
        return
    import torch

    from mmconcepts.concepts.decoding import concept_scores
    from mmconcepts.models import load_model
    from mmconcepts.models.head import load_head

    after_imports = rss_mb()
    start = time.perf_counter()
    adapter = load_model(folder, device="cpu", dtype="float32") if mode == "full" else load_head(folder)
    loaded = time.perf_counter() - start
    after_load = rss_mb()
    g = torch.Generator().manual_seed(0)
    d = adapter.hidden_size
    U = torch.randn(n_concepts, d, generator=g)
    U = U / U.norm(dim=1, keepdim=True)
    base = torch.randn(d, generator=g)
    strengths = torch.rand(n_concepts, generator=g) * 4 + 1
    start = time.perf_counter()
    scores = concept_scores(U, adapter.lm_head(), adapter.final_norm(), decode="effect", base=base,
                            strengths=strengths)
    scored = time.perf_counter() - start
    torch.save(scores, out + ".scores.pt")
    real = sum(p.numel() for p in adapter.model.parameters() if not p.is_meta)
    Path(out).write_text(json.dumps({
        "mode": mode, "peak_mb": rss_mb(), "vmhwm_mb": hwm_mb(), "after_imports_mb": after_imports,
        "after_load_mb": after_load,
        "load_s": loaded, "score_s": scored, "head_only": bool(getattr(adapter, "head_only", False)),
        "materialised_params": real}))


def run_child(mode: str, folder: Path, prefix: str, *extra: str) -> dict | None:
    """Run one ``--child`` in a fresh process; its numbers (``<prefix>result-<mode>.json``) if it wrote any."""
    out = Path(f"{prefix}result-{mode}.json")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    subprocess.run([sys.executable, __file__, "--child", mode, "--model", str(folder), "--out", str(out), *extra],
                   check=True, env=env)
    return json.loads(out.read_text()) if out.is_file() else None


def report(folder: Path, results: dict, n_concepts: int) -> None:
    size_mb = float32_bytes(folder) / 1e6
    shards = len(list(folder.glob("*.safetensors")))
    fmb, hmb = results["full"]["peak_mb"], results["head"]["peak_mb"]
    print(f"\n{folder.name}: float32 weights {size_mb:,.0f} MB, stored in {shards} safetensors file(s) of "
          f"{sum(p.stat().st_size for p in folder.glob('*.safetensors')) / 1e6:,.0f} MB; {n_concepts} concepts, "
          "effect decoding")
    print(f"{'path':<34}{'peak RSS MB':>12}{'VmHWM MB':>10}{'after imports':>15}{'after load':>12}"
          f"{'load s':>9}{'score s':>9}{'params kept':>14}")
    for mode, label in (("full", "(a) load_model + concept_scores"), ("head", "(b) load_head + concept_scores")):
        r = results[mode]
        hwm = f"{r['vmhwm_mb']:>10,.0f}" if r["vmhwm_mb"] is not None else f"{'-':>10}"
        print(f"{label:<34}{r['peak_mb']:>12,.0f}{hwm}{r['after_imports_mb']:>15,.0f}{r['after_load_mb']:>12,.0f}"
              f"{r['load_s']:>9.2f}{r['score_s']:>9.2f}{r['materialised_params']:>14,}")
    above = {mode: r["peak_mb"] - r["after_imports_mb"] for mode, r in results.items()}
    print(f"peak (a) / peak (b): {fmb / hmb:.2f}x;  peak (a) / float32 size: {fmb / size_mb:.2f};  "
          f"peak (b) / float32 size: {hmb / size_mb:.2f};  above the imports: (a) {above['full']:,.0f} MB, "
          f"(b) {above['head']:,.0f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="folder that keeps the built models between runs (default: a temporary "
                                          "folder, deleted at the end)")
    parser.add_argument("--smoke", action="store_true", help="a model of a few MB instead of 2.8 GB")
    parser.add_argument("--n-concepts", type=int, default=20)
    parser.add_argument("--shard-size", default="1GB", help="max_shard_size of save_pretrained")
    parser.add_argument("--stored", default="float32,float16",
                        help="comma-separated dtypes the checkpoint is saved in, one model each (default: "
                             "float32,float16; llava-hf/llava-1.5-7b-hf is stored in float16)")
    parser.add_argument("--child", choices=("build", "full", "head"), help=argparse.SUPPRESS)
    parser.add_argument("--text", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.out, args.n_concepts, json.loads(args.text or "null"), args.shard_size)
        return 0

    stored = [d.strip() for d in args.stored.split(",") if d.strip()]
    unknown = sorted(set(stored) - {"float32", "float16", "bfloat16"})
    if unknown or not stored:
        parser.error(f"--stored: unknown dtype(s) {', '.join(unknown) or '(none given)'}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mmconcepts-grounding-memory-") if temporary else args.workdir)
    workdir = workdir.expanduser().resolve()
    try:
        measured = []
        for dtype in stored:  # every measurement first: the parent's peak would carry into later children
            text = dict(SMOKE if args.smoke else FULL, stored=dtype)
            folder = workdir / folder_name(text)
            if not (folder / "DONE").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                start = time.perf_counter()
                print(f"building {folder.name} in {workdir} ...", flush=True)
                run_child("build", folder, f"{workdir}/", "--text", json.dumps(text), "--shard-size", args.shard_size)
                print(f"  built and saved in {time.perf_counter() - start:.0f} s", flush=True)
            results = {mode: run_child(mode, folder, f"{workdir / folder.name}-", "--n-concepts",
                                       str(args.n_concepts)) for mode in ("full", "head")}
            measured.append((folder, results))

        import torch  # only now, after the children

        for folder, results in measured:
            full = torch.load(f"{workdir / folder.name}-result-full.json.scores.pt", weights_only=True)
            head = torch.load(f"{workdir / folder.name}-result-head.json.scores.pt", weights_only=True)
            torch.testing.assert_close(head, full, rtol=1e-4, atol=1e-7)
            assert results["head"]["head_only"], "load_head fell back to the full model"
            report(folder, results, args.n_concepts)
            print(f"scores agree (max |difference| {(full - head).abs().max().item():.2e})", flush=True)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
