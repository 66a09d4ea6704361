"""Token-of-interest extraction: the hidden states from which a model predicts the words of interest.

For each image the model captions (``mode="generate"``, batched greedy decoding) or reads a reference
caption (``mode="teacher"``), the first position where each word of interest is produced is found, and the
hidden state *from which its first piece was predicted* is kept at every requested layer, all layers and
all words in the same pass (:mod:`mmconcepts.extract.batches`). Images are read and preprocessed in
DataLoader workers (:mod:`mmconcepts.extract.loader`). Samples go to a
:class:`~mmconcepts.extract.store.FeatureStoreWriter`, so memory stays flat and an interrupted run resumes
where it stopped. Under ``torchrun`` each rank extracts its share of the dataset
(:mod:`mmconcepts.extract.distributed`).

Examples
--------
The shipped ShapesWorld captioner (the default model) captions 8 images; 3 of its captions say "circle":

>>> from mmconcepts.data.shapesworld import write_dataset
>>> from mmconcepts.extract import extract, load_features
>>> _ = write_dataset("shapes/train", n=8, seed=0)
>>> manifest = extract("shapes/train", "circle", out="runs/circle", layers=["norm"], progress=False)
>>> manifest["n_samples"], manifest["counts"]["not_generated"]
(3, 5)
>>> Z, meta = load_features("runs/circle", layer="norm")
>>> Z.shape, meta[0]["caption"]
(torch.Size([3, 192]), 'one circle of big size on the left in blue and one square in green at the bottom of big size')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from mmconcepts import __version__
from mmconcepts.data.readers import Dataset, ImageLoadError, open_dataset
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.batches import Batch, TruncatedCaptionWarning, generate_rows, teacher_rows
from mmconcepts.extract.settings import RUN_COUNTS, WORD_COUNTS, ExtractionSettings, store_counts
from mmconcepts.extract.store import FeatureStoreWriter, store_tokens
from mmconcepts.extract.token_match import WordMatcher
from mmconcepts.files import link_fields
from mmconcepts.outputs import FolderLock, check_disjoint, clean_debris
from mmconcepts.models.base import DEFAULT_INSTRUCTION, ModelAdapter

__all__ = ["ExtractionSettings", "extract", "represent", "store_reading"]


def _data_record(dataset: Dataset, store: Path, split, limit) -> dict:
    from mmconcepts.data.fingerprint import fingerprint

    return {**link_fields("source", dataset.source, store), **link_fields("root", dataset.root, store),
            "kind": dataset.kind, "fingerprint": fingerprint(dataset.source), "split": split, "limit": limit,
            "n_images": len(dataset)}


def _image_side(adapter, names, hidden_size: int) -> dict:
    """The manifest's record of stored vision-encoder layers: ``{"widths": {layer: width}}`` for those whose width
    is not ``hidden_size``, and ``num_vision_layers`` (what ``vision.-1`` counts from); ``{}`` when none."""
    from mmconcepts.models.vision_parts import VISION_PREFIX, image_side_width, vision_layers

    vision = [n for n in names if str(n).startswith(VISION_PREFIX)]  # the projector's width is the decoder's
    layers = vision_layers(adapter.model)
    if not vision or layers is None:
        return {}
    widths = {n: image_side_width(adapter.model, n, hidden_size) for n in vision}
    widths = {n: w for n, w in widths.items() if w != hidden_size}
    return {**({"widths": widths} if widths else {}), "num_vision_layers": len(layers)}


def _run_record(adapter, opts, settings: ExtractionSettings, names, prompt, dataset, out, split, limit, columns):
    """The manifest: every setting of the run, the model as loaded, the data and its fingerprint."""
    from mmconcepts.models.options import as_options

    info = adapter.info()
    words = {"token": settings.token, "also": list(settings.also)} if len(settings.tokens) == 1 else \
        {"tokens": list(settings.tokens), "also": {t: list(v) for t, v in settings.variants.items()}}
    return {
        "kind": "feature-store", "model": adapter.model_id, "model_options": (opts or as_options(None)).record(adapter),
        "family": info.get("family"), "hidden_size": info["hidden_size"], "num_layers": info["num_layers"],
        **words, "layers": names, "mode": settings.mode, "keep": settings.keep,
        **({"positions": settings.positions} if settings.positions != "token" else {}),
        **_image_side(adapter, names, info["hidden_size"]),
        "instruction": settings.instruction, "prompt": prompt, "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.min_new_tokens, "batch_size": settings.batch_size, "dtype": settings.dtype,
        "shard_size": settings.shard_size, "commit_every": settings.commit_every, "split": split, "limit": limit,
        "data": {**_data_record(dataset, out, split, limit), **columns}, "mmconcepts_version": __version__,
    }


def extract(data, token=None, *, out: str | os.PathLike, model=None, settings: ExtractionSettings | None = None,
            split: str | None = None, limit: int | None = None, image_root=None, image_column: str | None = None,
            caption_column: str | None = None, resume: bool = False, overwrite: bool = False,
            progress: bool = True, **options) -> dict:
    """Extract the representations of one or several words of interest into a feature store at ``out``.

    Parameters
    ----------
    data : a :class:`~mmconcepts.data.Dataset` or a path that :func:`~mmconcepts.data.open_dataset` reads.
    token : the word of interest, or several (``"dog,cat"``); with ``**options`` the fields of
        :class:`~mmconcepts.extract.settings.ExtractionSettings` (``layers``, ``mode``, ``also``,
        ``batch_size``, ``num_workers``, ...), or pass a ready ``settings`` instead.
    model : a loaded :class:`~mmconcepts.models.ModelAdapter`, :class:`~mmconcepts.models.ModelOptions`, a
        hub id or folder, or ``None`` for the embedded ShapesWorld captioner. ``device`` and ``model_dtype``
        in ``options`` apply to a model given by id.
    split, limit, image_root, image_column, caption_column : passed to :func:`~mmconcepts.data.open_dataset`.
    resume : continue an interrupted store; every setting must be the one it was made with.

    Returns
    -------
    dict : the store's manifest (the run record), with the counts (scanned, kept, not generated, ..., and
    per word under ``counts["tokens"]``).

    Examples
    --------
    Two words read from the reference captions (teacher mode), "squares" counted as "square", at two layers:

    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> _ = write_dataset("shapes/train", n=8, seed=0)
    >>> manifest = extract("shapes/train", "circle,square", also={"square": ["squares"]}, out="runs/shapes",
    ...                    layers=[-1, "norm"], mode="teacher", progress=False)
    >>> manifest["layers"], {word: c["kept"] for word, c in manifest["counts"]["tokens"].items()}
    (['3', 'norm'], {'circle': 3, 'square': 4})
    """
    from mmconcepts.extract import distributed
    from mmconcepts.models.options import as_options

    load = {k: options.pop(k) for k in ("device", "model_dtype") if k in options}
    if settings is None:
        settings = ExtractionSettings(token=token, **options)
    elif token is not None or options:
        raise MMConceptsError("give the extraction settings either as settings= or as keywords, not both")
    columns = {"image_column": image_column, "caption_column": caption_column}
    dataset = data if isinstance(data, Dataset) else open_dataset(data, image_root=image_root, split=split,
                                                                  limit=limit, **columns)
    out = Path(out)
    check_disjoint(out, [dataset.source, dataset.root])  # before anything is loaded or touched
    rank = distributed.current()
    opts = None if isinstance(model, ModelAdapter) else as_options(model, **load)
    if opts is not None and rank.world > 1 and opts.device in ("auto", "cuda") and rank.cuda:
        opts = as_options(opts, device=f"cuda:{rank.local}")  # one GPU a rank
    adapter = model if opts is None else opts.load()
    names = list(dict.fromkeys(adapter.resolve_layer(layer) for layer in settings.layers))
    prompt = adapter.prompt(settings.instruction)
    manifest = _run_record(adapter, opts, settings, names, prompt, dataset, out, split, limit, columns)
    run = ExtractionRun(adapter, dataset, settings, manifest, names, prompt, progress)
    if rank.world > 1:
        return distributed.extract_ranks(rank, dataset, out, manifest, lambda part, start, stop: _extract_into(
            replace(run, progress=progress and rank.index == 0), StorePart(part, start, stop, resume)),
            resume=resume, overwrite=overwrite)
    with FolderLock(out):  # one writer of the store; a killed run's temp folders are cleaned up
        clean_debris(out)
        return _extract_into(run, StorePart(out, 0, len(dataset), resume, overwrite))


@dataclass(frozen=True)
class ExtractionRun:
    """What one extraction reads and how, the same for every part of it: the model, the data, the settings,
    the run record they make, the resolved layers and the prompt.

    Parameters
    ----------
    adapter : ModelAdapter
    dataset : Dataset
    settings : ExtractionSettings
    manifest : dict
        The run record (:func:`_run_record`), the store's manifest.
    layers : list of str
        The layers, as the adapter names them.
    prompt : str
    progress : bool
        Whether to show a progress bar.
    """

    adapter: ModelAdapter
    dataset: Dataset
    settings: ExtractionSettings
    manifest: dict
    layers: list[str]
    prompt: str
    progress: bool = True

    def rows(self, batch: Batch, matchers: dict[str, WordMatcher], words: dict) -> tuple[dict, list[dict]]:
        """The features and metadata rows of one batch, by the settings' mode; ``words`` (each word's counts)
        is counted up."""
        s = self.settings
        return read_batch(self.adapter, batch, self.layers, matchers, words, self.prompt, mode=s.mode,
                          positions=s.positions, keep=s.keep, max_new_tokens=s.max_new_tokens,
                          min_new_tokens=s.min_new_tokens, root=Path(self.dataset.root).resolve())


@dataclass(frozen=True)
class StorePart:
    """Where an extraction writes: the store folder, the dataset rows ``[start, stop)`` it holds, and whether it
    continues (``resume``) or replaces (``overwrite``) a store there."""

    out: Path
    start: int
    stop: int
    resume: bool = False
    overwrite: bool = False


@dataclass
class Counts:
    """The counts of a run so far: the run's (:data:`RUN_COUNTS`) and each word's (:data:`WORD_COUNTS`)."""

    run: dict[str, int]
    words: dict[str, dict[str, int]]

    @classmethod
    def resumed(cls, done: dict, tokens) -> Counts:
        """The counts a store has committed (``done``, its manifest's ``counts``), zero for a new store."""
        per_word = done.get("tokens") or {}
        return cls({k: done.get(k, 0) for k in RUN_COUNTS},
                   {t: {k: per_word.get(t, {}).get(k, 0) for k in WORD_COUNTS} for t in tokens})

    def record(self) -> dict:
        """The counts as the manifest keeps them (:func:`~mmconcepts.extract.settings.store_counts`)."""
        return store_counts(self.run, self.words)

    def none_kept(self) -> MMConceptsError | None:
        """The error that a word was kept in no image (the first such word), else ``None``."""
        missing = [t for t, c in self.words.items() if c["kept"] == 0]
        if not missing:
            return None
        c, run = self.words[missing[0]], self.run
        return MMConceptsError(
            f"the token {missing[0]!r} was kept in no image (scanned {run['scanned']}, not generated "
            f"{c['not_generated']}, generated but not in references {c['generated_not_in_reference']}, not in "
            f"references {c['not_in_reference']}, past the model's context {c['beyond_context']}, skipped images "
            f"{run['skipped_images']}); try another token, --keep generated or --mode teacher")


def _extract_into(run: ExtractionRun, part: StorePart) -> dict:
    """Extract ``run.dataset[part.start:part.stop]`` into the store ``part.out`` (the whole run, or one rank's
    part); returns the store's manifest."""
    from tqdm.auto import tqdm

    s = run.settings
    writer = FeatureStoreWriter(part.out, run.manifest, shard_size=s.shard_size, resume=part.resume,
                                overwrite=part.overwrite, commit_every=s.commit_every)
    counts = Counts.resumed(writer.counts, s.tokens)
    position = max(part.start, writer.position)
    bar = tqdm(total=part.stop - part.start, initial=position - part.start, unit="img", disable=not run.progress,
               leave=False, desc=f"extract '{','.join(s.tokens)}'")
    try:
        for end in _scan(run, writer, counts, position, part.stop):
            bar.update(end - position)
            position = end
    except BaseException:
        if writer.staged or (writer.created and writer.n_samples == 0):
            writer.discard()  # a store being replaced stays as it was
        raise
    finally:
        bar.close()
    error = counts.none_kept() if (part.start, part.stop) == (0, len(run.dataset)) else None
    if error is not None:  # a rank's part may miss a word that another part holds: merge checks the whole
        writer.discard()
        raise error
    warn_truncated(counts.words, run.adapter)
    return writer.close(part.stop, counts.record())


def _scan(run: ExtractionRun, writer: FeatureStoreWriter, counts: Counts, position: int, stop: int):
    """Read the images ``[position, stop)`` batch by batch into ``writer``, counting into ``counts``; yields
    the dataset position committed after each batch."""
    from mmconcepts.extract.loader import batches

    s = run.settings
    matchers = {t: WordMatcher(t, s.variants[t]) for t in s.tokens}
    for batch, errors, end in batches(run.dataset, position, stop, s.batch_size, processor=run.adapter.processor,
                                      prompt=run.prompt if s.mode == "generate" else None,
                                      num_workers=s.num_workers, pin_memory=run.adapter.device.type == "cuda"):
        if errors and s.strict:
            raise ImageLoadError(errors[0])
        counts.run["skipped_images"] += len(errors)
        counts.run["scanned"] += end - position
        if batch.indices:
            features, meta = run.rows(batch, matchers, counts.words)
            if meta:
                writer.add(features, meta)
            writer.add_captions(batch.captions)
        writer.commit(end, counts.record())
        position = end
        yield end


def represent(adapter, samples: list, images: list, token: str, layers, mode: str = "generate", also=(),
              keep: str = "generated", max_new_tokens: int = 50, instruction: str = DEFAULT_INSTRUCTION,
              min_new_tokens: int = 0, positions: str = "token") -> tuple[dict, list[dict], dict]:
    """Representations of a few in-memory images (no store): ``(features, metadata rows, counts)``.

    ``samples`` are :class:`~mmconcepts.data.Sample` records of ``images`` (their captions are the references,
    or the caption to read in teacher mode). Rows whose word is not found are left out and counted. Give
    the ``instruction``, ``also`` words, lengths and ``positions`` of the store the dictionary was learnt on
    (:func:`store_reading`), so that the model reads these images as it read the training images
    (``positions="image"``: one row per image token, :mod:`mmconcepts.extract.image_rows`).
    """
    matchers = {token: WordMatcher(token, also)}
    names = [adapter.resolve_layer(layer) for layer in layers]
    counts = {token: {k: 0 for k in WORD_COUNTS}}
    batch = Batch(list(range(len(samples))), list(samples), images=list(images))
    prompt = adapter.prompt(instruction)
    features, meta = read_batch(adapter, batch, names, matchers, counts, prompt, mode=mode, positions=positions,
                                keep=keep, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
    if mode == "teacher" and positions == "token":
        warn_truncated(counts, adapter)
    return features, meta, counts[token]


def read_batch(adapter, batch: Batch, layers: list[str], matchers: dict, words: dict, prompt: str, *, mode: str,
               positions: str, keep: str, max_new_tokens: int, min_new_tokens: int = 0, root: Path | None = None
               ) -> tuple[dict, list[dict]]:
    """The features and metadata rows of one batch, read by ``mode`` (generate / teacher) at ``positions``
    (the word's state / every image token's, :mod:`~mmconcepts.extract.image_rows`); ``words`` (each word's
    counts) is counted up."""
    if positions == "image":
        from mmconcepts.extract.image_rows import generate_image_rows, teacher_image_rows

        if mode == "generate":
            return generate_image_rows(adapter, batch, layers, matchers, keep, words, prompt, max_new_tokens,
                                       min_new_tokens, root)
        return teacher_image_rows(adapter, batch, layers, matchers, words, prompt, root)
    if mode == "generate":
        return generate_rows(adapter, batch, layers, matchers, keep, words, prompt, max_new_tokens, min_new_tokens,
                             root)
    return teacher_rows(adapter, batch, layers, matchers, words, prompt, root)


def warn_truncated(words: dict, adapter) -> None:
    """A :class:`~mmconcepts.extract.batches.TruncatedCaptionWarning` when teacher mode cut captions to the
    model's context (``words``: each word's counts)."""
    cut = sum(c.get("truncated_captions", 0) for c in words.values())
    if cut:
        import warnings

        from mmconcepts.models.base import context_length

        lost = sum(c.get("beyond_context", 0) for c in words.values())
        warnings.warn(TruncatedCaptionWarning(
            f"{cut} reference caption(s) were longer than {adapter.model_id}'s context of "
            f"{context_length(adapter.model)} tokens and were cut to it (truncated_captions); {lost} word(s) past "
            "the cut were not kept (beyond_context)"), stacklevel=3)


def store_reading(manifest: dict, token: str | None = None) -> dict:
    """The keyword arguments of :func:`represent` that repeat how a store read its images for ``token`` (its
    only word when ``None``): the word and its ``also`` variants, the instruction, the caption lengths and the
    positions read."""
    words = store_tokens(manifest)
    token = token if token is not None else next(iter(words))
    return {"token": token, "also": tuple(words.get(token, ())),
            "instruction": manifest.get("instruction") or DEFAULT_INSTRUCTION,
            "max_new_tokens": int(manifest.get("max_new_tokens") or 50),
            "min_new_tokens": int(manifest.get("min_new_tokens") or 0),
            "positions": str(manifest.get("positions") or "token")}
