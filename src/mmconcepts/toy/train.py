"""Train the embedded ShapesWorld captioner (``mmconcepts train-toy``).

Every step draws a fresh batch of scenes from its own seed (so the data never repeats and the run is
reproducible), trains the whole LLaVA with teacher forcing on one caption of each scene, and the loss
covers only the caption tokens and the end-of-sequence token. Every ``eval_every`` steps the model captions
held-out scenes greedily, the log gets a line, and the checkpoint in ``out`` is replaced atomically.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

from mmconcepts.data.shapesworld import caption, render, sample_scene
from mmconcepts.errors import MMConceptsError, check_count
from mmconcepts.files import write_json
from mmconcepts.outputs import FolderLock, check_disjoint, clean_debris, new_temp_dir, swap_in
from mmconcepts.models.llava import LlavaAdapter
from mmconcepts.data.truth import caption_accuracy
from mmconcepts.toy.build import build_model, build_processor

INSTRUCTION = "Provide a one-sentence caption for the provided image."


def _prompt(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _save(model, processor, out: Path, card: dict) -> None:
    import shutil

    tmp = new_temp_dir(out)
    try:
        processor.tokenizer.padding_side = "left"
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(tmp / "training.json", card, indent=2)
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _carry_vocabulary(model, old_vocab: dict[str, int], new_vocab: dict[str, int]) -> None:
    """Give ``model`` (trained with ``old_vocab``) the rows of ``new_vocab``: a word it knew keeps its
    embedding and unembedding rows, a new word starts from the mean row."""
    import torch

    size = len(new_vocab)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    model.resize_token_embeddings(size, mean_resizing=False)
    pairs = [(i, old_vocab[w]) for w, i in new_vocab.items() if w in old_vocab]
    new_ids = torch.tensor([i for i, _ in pairs])
    old_ids = torch.tensor([j for _, j in pairs])
    with torch.no_grad():
        for module, old in ((model.get_input_embeddings(), old_in), (model.get_output_embeddings(), old_out)):
            module.weight[:] = old.mean(dim=0)
            module.weight[new_ids] = old[old_ids]


def _load_checkpoint(init_from, tokenizer):
    import torch
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    folder = Path(init_from)
    if not (folder / "config.json").is_file():
        raise MMConceptsError(f"--init-from {init_from}: no checkpoint there (config.json missing); give a folder "
                              "written by `mmconcepts train-toy`")
    try:
        model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        old_vocab = AutoTokenizer.from_pretrained(folder).get_vocab()
    except (OSError, ValueError, KeyError) as exc:
        raise MMConceptsError(f"--init-from {init_from}: cannot load the checkpoint ({str(exc).splitlines()[0]}); "
                              "give a folder written by `mmconcepts train-toy`") from None
    new_vocab = tokenizer.get_vocab()
    if old_vocab != new_vocab:
        _carry_vocabulary(model, old_vocab, new_vocab)
    return model


def train(out: str | os.PathLike, steps: int = 3000, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
          eval_every: int = 250, n_eval: int = 64, warmup: int = 100,
          init_from: str | os.PathLike | None = None, step_offset: int = 0) -> dict:
    """Train the captioner and save it (``save_pretrained``) into ``out``; returns the card.

    ``init_from`` continues from a saved checkpoint (a new schedule of ``steps`` steps; a checkpoint with
    another vocabulary keeps the rows of the words it knew); ``step_offset`` shifts the data seeds so a
    continued run sees new scenes.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size),
                        ("eval_every", eval_every), ("n_eval", n_eval), ("warmup", warmup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MMConceptsError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and 0 <= lr < 1):
        raise MMConceptsError(f"--lr must be a learning rate in [0, 1), got {lr!r}")
    check_count("seed (--seed)", seed, 0)
    check_count("step_offset (--step-offset)", step_offset, 0)
    out = Path(out)
    check_disjoint(out, [init_from])
    with FolderLock(out):  # one trainer per checkpoint folder; each save is swapped in whole
        clean_debris(out)
        return _train(out, steps, batch_size, lr, seed, eval_every, n_eval, warmup, init_from, step_offset)


def _train(out: Path, steps, batch_size, lr, seed, eval_every, n_eval, warmup, init_from, step_offset) -> dict:
    """The training loop of :func:`train`, ``out`` locked."""
    import torch

    processor = build_processor()
    if init_from is not None:
        model = _load_checkpoint(init_from, processor.tokenizer)
    else:
        model = build_model(processor.tokenizer, seed=seed)
    prompt = _prompt(processor)
    eval_rng = random.Random(f"toy-eval-{seed}")
    eval_scenes = [sample_scene(eval_rng) for _ in range(n_eval)]
    eval_images = [render(s) for s in eval_scenes]
    eval_attrs = [s.attributes() for s in eval_scenes]

    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    tok = processor.tokenizer
    probe = processor(images=[[eval_images[0]]], text=[prompt], return_tensors="pt")
    prompt_len = probe["input_ids"].shape[1]
    log_path = out.with_name(out.name + ".log.jsonl")
    card = {"params": params, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "threads": torch.get_num_threads(), "samples_seen": 0, "init_from": str(init_from) if init_from else None,
            "step_offset": step_offset}
    start = time.time()
    model.train()
    for step in range(steps):
        rng = random.Random(f"toy-train-{seed}-{step + step_offset}")
        scenes = [sample_scene(rng) for _ in range(batch_size)]
        texts = [f"{prompt} {caption(s, rng)}{tok.eos_token}" for s in scenes]
        tok.padding_side = "right"
        batch = processor(images=[[render(s)] for s in scenes], text=texts, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        labels[:, :prompt_len] = -100
        labels[batch["attention_mask"] == 0] = -100
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        card["samples_seen"] += batch_size
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            model.eval()
            captions = LlavaAdapter(model, processor, model_id="in-training").caption(eval_images, max_new_tokens=48)
            accuracy = caption_accuracy(captions, eval_attrs)
            model.train()
            card.update(step=step + 1, loss=float(loss.detach()), seconds=round(time.time() - start, 1), eval=accuracy)
            with open(log_path, "a") as f:
                f.write(json.dumps(card) + "\n")
            print(json.dumps(card), flush=True)
            model.eval()
            _save(model, processor, out, card)
            model.train()
    return card

