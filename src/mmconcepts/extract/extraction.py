"""Token-of-interest extraction: the hidden states from which a model predicts the word ``token``.

For each image the model captions (``mode="generate"``, batched greedy decoding) or reads a reference
caption (``mode="teacher"``, one forward pass a batch), the first position where the word is produced is
found, and the hidden state *from which its first piece was predicted* is kept at every requested layer,
all layers in the same pass. Samples go to a :class:`~mmconcepts.extract.store.FeatureStoreWriter` shard by
shard, so memory stays flat and an interrupted run resumes where it stopped.

Examples
--------
>>> from mmconcepts.extract import extract                                          # doctest: +SKIP
>>> manifest = extract("shapes/train", "circle", out="runs/circle", layers=["norm"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mmconcepts import __version__
from mmconcepts.data.readers import Dataset, ImageLoadError, open_dataset
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.hooks import PositionRecorder, StepRecorder
from mmconcepts.extract.store import DTYPES, FeatureStoreWriter
from mmconcepts.extract.token_match import WordMatcher

MODES = ("generate", "teacher")
KEEP_RULES = ("both", "generated")
COUNT_KEYS = ("scanned", "kept", "generated_not_in_reference", "not_generated", "not_in_reference",
              "skipped_images")


@dataclass
class _Batch:
    indices: list[int]
    samples: list
    images: list
    captions: list[dict] = field(default_factory=list)  # generated caption of every row (generate mode)


def _load_batch(dataset: Dataset, start: int, stop: int, counts: dict, strict: bool) -> _Batch:
    batch = _Batch([], [], [])
    for i in range(start, stop):
        sample = dataset[i]
        try:
            image = sample.load()
        except ImageLoadError:
            if strict:
                raise
            counts["skipped_images"] += 1
            continue
        batch.indices.append(i)
        batch.samples.append(sample)
        batch.images.append(image)
    return batch


def _row_meta(index: int, sample, caption: str, position: int, word: str) -> dict:
    row = {"id": sample.id, "index": index, "image": str(sample.image), "caption": caption,
           "references": sample.captions, "position": position, "word": word}
    if sample.attributes is not None:
        row["attributes"] = sample.attributes
    return row


def _generate_batch(adapter, batch: _Batch, layers, matcher, keep, counts, prompt, max_new_tokens, min_new_tokens):
    import torch

    inputs = adapter.encode(batch.images, [prompt] * len(batch.images))
    with StepRecorder(adapter, layers) as recorder, torch.inference_mode():
        out = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                     do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1]:].tolist()
    rows, steps, meta = [], [], []
    for row, (index, sample, ids) in enumerate(zip(batch.indices, batch.samples, new_tokens)):
        found = matcher.first_piece(adapter.tokenizer, ids)
        kept = False
        if found is None:
            counts["not_generated"] += 1
            text = adapter.tokenizer.decode(ids, skip_special_tokens=True)
        elif keep == "both" and not matcher.in_any(sample.captions):
            counts["generated_not_in_reference"] += 1
            text = found[2]
        else:
            step, word, text = found
            kept = True
            rows.append(row)
            steps.append(step)
            meta.append(_row_meta(index, sample, text.strip(), step, word))
        batch.captions.append({"index": index, "id": sample.id, "caption": text.strip(), "kept": kept})
    return recorder.gather(rows, steps), meta


def _teacher_batch(adapter, batch: _Batch, layers, matcher, counts, prompt):
    import torch

    tokenizer = adapter.tokenizer
    chosen, texts, targets = [], [], []
    for row, sample in enumerate(batch.samples):
        caption = next((c for c in sample.captions if matcher.find(c)), None)
        if caption is None:
            counts["not_in_reference"] += 1
            continue
        sep = "" if prompt[-1:].isspace() else " "
        text = prompt + sep + caption
        start, word = matcher.find(caption)
        chosen.append(row)
        texts.append(text)
        targets.append((len(prompt) + len(sep) + start, word, caption))
    if not chosen:
        return {}, []
    inputs = adapter.encode([batch.images[r] for r in chosen], texts)
    ids = inputs["input_ids"]
    length = ids.shape[1]
    positions, meta = [], []
    for j, (text, (char, word, caption)) in enumerate(zip(texts, targets)):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        piece = next(i for i, (a, b) in enumerate(offsets) if b > char)
        position = length - (len(offsets) - piece)  # the caption sits at the end of a left-padded row
        if int(ids[j, position]) != enc["input_ids"][piece]:
            raise MMConceptsError(f"teacher mode cannot align the caption tokens of {adapter.model_id}; "
                                  "use --mode generate")
        positions.append(position - 1)  # the state from which the piece is predicted
        row = chosen[j]
        meta.append(_row_meta(batch.indices[row], batch.samples[row], caption, piece, word))
    rows = torch.arange(len(chosen))
    with PositionRecorder(adapter, layers, rows, torch.tensor(positions)) as recorder, torch.inference_mode():
        adapter.model(**inputs)
    return recorder.gather(), meta


def extract(data, token: str, *, out: str | os.PathLike, model=None, layers=("norm",), mode: str = "generate",
            also=(), keep: str = "both", batch_size: int = 16, max_new_tokens: int = 50, min_new_tokens: int = 0,
            split: str | None = None, limit: int | None = None, image_root=None, resume: bool = False,
            overwrite: bool = False, dtype: str = "float16", device: str = "auto", model_dtype: str = "float32",
            strict: bool = False, instruction: str | None = None, shard_size: int = 1024,
            progress: bool = True) -> dict:
    """Extract the token-of-interest representations of a dataset into a feature store at ``out``.

    Parameters
    ----------
    data : a :class:`~mmconcepts.data.Dataset` or a path that :func:`~mmconcepts.data.open_dataset` reads.
    token : the word of interest (``"dog"``); ``also`` adds variants (``["dogs"]``).
    model : a loaded :class:`~mmconcepts.models.ModelAdapter`, a hub id or folder, or ``None`` for the
        embedded ShapesWorld captioner.
    layers : layer names or indices (``-1``, ``"norm"``); all are recorded in the same pass.
    mode : ``"generate"`` (greedy captions) or ``"teacher"`` (the first reference caption holding the word).
    keep : ``"both"`` keeps a sample when the word is in the generated caption and in a reference caption
        (the paper's rule); ``"generated"`` drops the second condition.
    dtype : storage dtype of the features; ``model_dtype`` is the dtype the model runs in.

    Returns
    -------
    dict : the store's manifest, with the counts (scanned, kept, not generated, ...).
    """
    if mode not in MODES:
        raise MMConceptsError(f"unknown mode {mode!r}: choose {' or '.join(MODES)}")
    if keep not in KEEP_RULES:
        raise MMConceptsError(f"unknown keep rule {keep!r}: choose {' or '.join(KEEP_RULES)}")
    if dtype not in DTYPES:
        raise MMConceptsError(f"unknown storage dtype {dtype!r}: choose {', '.join(DTYPES)}")
    if batch_size < 1 or max_new_tokens < 1:
        raise MMConceptsError("--batch-size and --max-new-tokens must be at least 1")
    if not token or not token.strip() or len(token.split()) != 1:
        raise MMConceptsError(f"the token of interest must be one word, got {token!r}")
    matcher = WordMatcher(token, also)
    dataset = data if isinstance(data, Dataset) else open_dataset(data, image_root=image_root, split=split,
                                                                  limit=limit)
    from mmconcepts.models import as_adapter

    adapter = as_adapter(model, device=device, dtype=model_dtype)
    names = list(dict.fromkeys(adapter.resolve_layer(layer) for layer in layers))
    prompt = adapter.prompt(instruction) if instruction else adapter.prompt()
    info = adapter.info()
    manifest = {
        "model": adapter.model_id, "revision": getattr(adapter, "revision", None), "family": info.get("family"),
        "layers": names, "token": matcher.token, "also": matcher.words[1:], "mode": mode, "keep": keep,
        "dtype": dtype, "hidden_size": info["hidden_size"], "num_layers": info["num_layers"],
        "data": str(dataset.source), "split": split, "limit": limit, "instruction": prompt,
        "max_new_tokens": max_new_tokens, "batch_size": batch_size, "mmconcepts_version": __version__,
    }
    writer = FeatureStoreWriter(out, manifest, shard_size=shard_size, resume=resume, overwrite=overwrite)
    counts = {key: writer.counts.get(key, 0) for key in COUNT_KEYS}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(dataset), initial=writer.position, unit="img", desc=f"extract '{token}'",
               disable=not progress, leave=False)
    try:
        for start in range(writer.position, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            batch = _load_batch(dataset, start, stop, counts, strict)
            counts["scanned"] += stop - start
            if batch.images:
                if mode == "generate":
                    features, meta = _generate_batch(adapter, batch, names, matcher, keep, counts, prompt,
                                                     max_new_tokens, min_new_tokens)
                else:
                    features, meta = _teacher_batch(adapter, batch, names, matcher, counts, prompt)
                if meta:
                    writer.add(features, meta)
                    counts["kept"] += len(meta)
                writer.add_captions(batch.captions)
            writer.commit(stop, counts)
            bar.update(stop - start)
            bar.set_postfix(kept=counts["kept"])
    except BaseException:
        if writer.created and writer.n_samples == 0:
            writer.discard()
        raise
    finally:
        bar.close()
    if counts["kept"] == 0:
        writer.discard()
        raise MMConceptsError(
            f"the token {token!r} was kept in no image (scanned {counts['scanned']}, not generated "
            f"{counts['not_generated']}, generated but not in references {counts['generated_not_in_reference']}, "
            f"skipped images {counts['skipped_images']}); try another token, --keep generated or --mode teacher")
    return writer.close(len(dataset), counts)


def represent(adapter, samples: list, images: list, token: str, layers, mode: str = "generate", also=(),
              keep: str = "generated", max_new_tokens: int = 50) -> tuple[dict, list[dict], dict]:
    """Representations of a few in-memory images (no store): ``(features, metadata rows, counts)``.

    ``samples`` are :class:`~mmconcepts.data.Sample` records of ``images`` (their captions are the references,
    or the caption to read in teacher mode). Rows whose word is not found are left out and counted.
    """
    matcher = WordMatcher(token, also)
    names = [adapter.resolve_layer(layer) for layer in layers]
    counts = {key: 0 for key in COUNT_KEYS}
    batch = _Batch(list(range(len(samples))), list(samples), list(images))
    prompt = adapter.prompt()
    if mode == "generate":
        features, meta = _generate_batch(adapter, batch, names, matcher, keep, counts, prompt, max_new_tokens, 0)
    else:
        features, meta = _teacher_batch(adapter, batch, names, matcher, counts, prompt)
    return features, meta, counts
