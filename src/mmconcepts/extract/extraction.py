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
from pathlib import Path

from mmconcepts import __version__
from mmconcepts.data.readers import Dataset, ImageLoadError, open_dataset
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.hooks import PositionRecorder, StepRecorder
from mmconcepts.extract.store import DTYPES, FeatureStoreWriter
from mmconcepts.extract.token_match import WordMatcher
from mmconcepts.files import link_fields
from mmconcepts.models.base import DEFAULT_INSTRUCTION

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


def _image_entry(image, root: Path | None) -> str:
    """How a metadata row names its image: relative to the dataset's root (so the store and its data can move
    together or apart), absolute when it lies outside the root or there is none."""
    path = Path(image).resolve()
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


def _row_meta(index: int, sample, caption: str, position: int, word: str, root: Path | None = None) -> dict:
    row = {"id": sample.id, "index": index, "image": _image_entry(sample.image, root), "caption": caption,
           "references": sample.captions, "position": position, "word": word}
    if sample.attributes is not None:
        row["attributes"] = sample.attributes
    return row


def _generate_batch(adapter, batch: _Batch, layers, matcher, keep, counts, prompt, max_new_tokens, min_new_tokens,
                    root: Path | None = None):
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
            meta.append(_row_meta(index, sample, text.strip(), step, word, root))
        batch.captions.append({"index": index, "id": sample.id, "caption": text.strip(), "kept": kept})
    return recorder.gather(rows, steps), meta


def _teacher_batch(adapter, batch: _Batch, layers, matcher, counts, prompt, root: Path | None = None):
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
        meta.append(_row_meta(batch.indices[row], batch.samples[row], caption, piece, word, root))
    rows = torch.arange(len(chosen))
    with PositionRecorder(adapter, layers, rows, torch.tensor(positions)) as recorder, torch.inference_mode():
        adapter.model(**inputs)
    return recorder.gather(), meta


@dataclass(frozen=True)
class ExtractionSettings:
    """What an extraction reads and keeps; validated once, written into the store's manifest.

    Parameters
    ----------
    token : the word of interest (``"dog"``); ``also`` adds variants (``("dogs",)``) that count as the word.
    layers : layer names or indices (``-1``, ``"norm"``), all recorded in the same pass.
    mode : ``"generate"`` (greedy captions) or ``"teacher"`` (the first reference caption holding the word).
    keep : ``"both"`` keeps a sample when the word is in the generated caption and in a reference caption
        (the paper's rule); ``"generated"`` drops the second condition.
    instruction : the user message under the image (the model's chat template wraps it).
    max_new_tokens, min_new_tokens : caption lengths (generate mode).
    batch_size : images per forward pass.
    dtype : storage dtype of the features.
    shard_size : samples per shard file.
    commit_every : progress is committed at least every this many scanned images (see
        :class:`~mmconcepts.extract.store.FeatureStoreWriter`).
    strict : fail on an unreadable image instead of skipping and counting it.
    """

    token: str
    also: tuple[str, ...] = ()
    layers: tuple = ("norm",)
    mode: str = "generate"
    keep: str = "both"
    instruction: str = DEFAULT_INSTRUCTION
    max_new_tokens: int = 50
    min_new_tokens: int = 0
    batch_size: int = 16
    dtype: str = "float16"
    shard_size: int = 1024
    commit_every: int = 256
    strict: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise MMConceptsError(f"unknown mode {self.mode!r}: choose {' or '.join(MODES)}")
        if self.keep not in KEEP_RULES:
            raise MMConceptsError(f"unknown keep rule {self.keep!r}: choose {' or '.join(KEEP_RULES)}")
        if self.dtype not in DTYPES:
            raise MMConceptsError(f"unknown storage dtype {self.dtype!r}: choose {', '.join(DTYPES)}")
        for name in ("batch_size", "max_new_tokens", "shard_size", "commit_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MMConceptsError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if isinstance(self.min_new_tokens, bool) or not isinstance(self.min_new_tokens, int) or \
                not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise MMConceptsError(f"--min-new-tokens must be an integer in [0, --max-new-tokens], got "
                                  f"{self.min_new_tokens!r}")
        if not isinstance(self.token, str) or len(self.token.split()) != 1:
            raise MMConceptsError(f"the token of interest must be one word, got {self.token!r}")
        also = tuple(w.strip() for w in ([self.also] if isinstance(self.also, str) else self.also) if w.strip())
        if any(len(w.split()) != 1 for w in also):
            raise MMConceptsError(f"each --also variant must be one word, got {', '.join(also)!r}")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise MMConceptsError("the instruction must be a non-empty text")
        object.__setattr__(self, "token", self.token.strip())
        object.__setattr__(self, "also", also)
        object.__setattr__(self, "layers", tuple(self.layers))


def _data_record(dataset: Dataset, store: Path, split, limit) -> dict:
    from mmconcepts.data.fingerprint import fingerprint

    return {**link_fields("source", dataset.source, store), **link_fields("root", dataset.root, store),
            "kind": dataset.kind, "fingerprint": fingerprint(dataset.source), "split": split, "limit": limit,
            "n_images": len(dataset)}


def extract(data, token: str | None = None, *, out: str | os.PathLike, model=None,
            settings: ExtractionSettings | None = None, split: str | None = None, limit: int | None = None,
            image_root=None, image_column: str | None = None, caption_column: str | None = None,
            resume: bool = False, overwrite: bool = False, progress: bool = True, **options) -> dict:
    """Extract the token-of-interest representations of a dataset into a feature store at ``out``.

    Parameters
    ----------
    data : a :class:`~mmconcepts.data.Dataset` or a path that :func:`~mmconcepts.data.open_dataset` reads.
    token : the word of interest; with ``**options`` the fields of :class:`ExtractionSettings` (``layers``,
        ``mode``, ``also``, ``batch_size``, ...), or pass a ready ``settings`` instead.
    model : a loaded :class:`~mmconcepts.models.ModelAdapter`, :class:`~mmconcepts.models.ModelOptions`, a
        hub id or folder, or ``None`` for the embedded ShapesWorld captioner. ``device`` and ``model_dtype``
        in ``options`` apply to a model given by id.
    split, limit, image_root, image_column, caption_column : passed to :func:`~mmconcepts.data.open_dataset`.
    resume : continue an interrupted store; every setting must be the one it was made with.

    Returns
    -------
    dict : the store's manifest (the run record), with the counts (scanned, kept, not generated, ...).
    """
    from mmconcepts.models.options import as_options

    load = {k: options.pop(k) for k in ("device", "model_dtype") if k in options}
    if settings is None:
        settings = ExtractionSettings(token=token, **options)
    elif token is not None or options:
        raise MMConceptsError("give the extraction settings either as settings= or as keywords, not both")
    matcher = WordMatcher(settings.token, settings.also)
    columns = {"image_column": image_column, "caption_column": caption_column}
    dataset = data if isinstance(data, Dataset) else open_dataset(data, image_root=image_root, split=split,
                                                                  limit=limit, **columns)
    from mmconcepts.models import ModelAdapter

    opts = None if isinstance(model, ModelAdapter) else as_options(model, **load)
    adapter = model if opts is None else opts.load()
    names = list(dict.fromkeys(adapter.resolve_layer(layer) for layer in settings.layers))
    prompt = adapter.prompt(settings.instruction)
    info = adapter.info()
    out = Path(out)
    record = (opts or as_options(None)).record(adapter)
    manifest = {
        "kind": "feature-store", "model": adapter.model_id, "model_options": record, "family": info.get("family"),
        "hidden_size": info["hidden_size"], "num_layers": info["num_layers"], "token": matcher.token,
        "also": list(matcher.words[1:]), "layers": names, "mode": settings.mode, "keep": settings.keep,
        "instruction": settings.instruction, "prompt": prompt, "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.min_new_tokens, "batch_size": settings.batch_size, "dtype": settings.dtype,
        "shard_size": settings.shard_size, "commit_every": settings.commit_every, "split": split, "limit": limit,
        "data": {**_data_record(dataset, out, split, limit), **columns}, "mmconcepts_version": __version__,
    }
    writer = FeatureStoreWriter(out, manifest, shard_size=settings.shard_size, resume=resume, overwrite=overwrite,
                                commit_every=settings.commit_every)
    counts = {key: writer.counts.get(key, 0) for key in COUNT_KEYS}
    root = Path(dataset.root).resolve()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(dataset), initial=writer.position, unit="img", desc=f"extract '{matcher.token}'",
               disable=not progress, leave=False)
    try:
        for start in range(writer.position, len(dataset), settings.batch_size):
            stop = min(start + settings.batch_size, len(dataset))
            batch = _load_batch(dataset, start, stop, counts, settings.strict)
            counts["scanned"] += stop - start
            if batch.images:
                if settings.mode == "generate":
                    features, meta = _generate_batch(adapter, batch, names, matcher, settings.keep, counts, prompt,
                                                     settings.max_new_tokens, settings.min_new_tokens, root)
                else:
                    features, meta = _teacher_batch(adapter, batch, names, matcher, counts, prompt, root)
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
            f"the token {matcher.token!r} was kept in no image (scanned {counts['scanned']}, not generated "
            f"{counts['not_generated']}, generated but not in references {counts['generated_not_in_reference']}, "
            f"skipped images {counts['skipped_images']}); try another token, --keep generated or --mode teacher")
    return writer.close(len(dataset), counts)


def represent(adapter, samples: list, images: list, token: str, layers, mode: str = "generate", also=(),
              keep: str = "generated", max_new_tokens: int = 50, instruction: str = DEFAULT_INSTRUCTION,
              min_new_tokens: int = 0) -> tuple[dict, list[dict], dict]:
    """Representations of a few in-memory images (no store): ``(features, metadata rows, counts)``.

    ``samples`` are :class:`~mmconcepts.data.Sample` records of ``images`` (their captions are the references,
    or the caption to read in teacher mode). Rows whose word is not found are left out and counted. Give
    the ``instruction``, ``also`` words and lengths of the store the dictionary was learnt on
    (:func:`store_reading`), so that the model reads these images as it read the training images.
    """
    matcher = WordMatcher(token, also)
    names = [adapter.resolve_layer(layer) for layer in layers]
    counts = {key: 0 for key in COUNT_KEYS}
    batch = _Batch(list(range(len(samples))), list(samples), list(images))
    prompt = adapter.prompt(instruction)
    if mode == "generate":
        features, meta = _generate_batch(adapter, batch, names, matcher, keep, counts, prompt, max_new_tokens,
                                         min_new_tokens)
    else:
        features, meta = _teacher_batch(adapter, batch, names, matcher, counts, prompt)
    return features, meta, counts


def store_reading(manifest: dict) -> dict:
    """The keyword arguments of :func:`represent` that repeat how a store read its images: the word and its
    ``also`` variants, the instruction and the caption lengths."""
    return {"token": manifest["token"], "also": tuple(manifest.get("also") or ()),
            "instruction": manifest.get("instruction") or DEFAULT_INSTRUCTION,
            "max_new_tokens": int(manifest.get("max_new_tokens") or 50),
            "min_new_tokens": int(manifest.get("min_new_tokens") or 0)}
