"""One batch of images through the model: the hidden states from which each word of interest is predicted.

:func:`generate_rows` captions the batch once (greedy decoding) and, for every word of interest, finds the
first position where the model produced it; :func:`teacher_rows` reads, for every word, the first reference
caption that holds it (one forward pass per word, so each word's batch is the one a single-word run
would make). Both return the ``{layer: n x D}`` features and one metadata row per kept (image, word), rows
of each word in dataset order, and update the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.recorders import PositionRecorder, StepRecorder
from mmconcepts.extract.token_match import pieces
from mmconcepts.models.base import context_length
from mmconcepts.models.generation import decode
from mmconcepts.models.prompts import append_tokens, last_positions, teacher_appends


class TruncatedCaptionWarning(UserWarning):
    """Teacher mode cut reference captions longer than the model's context (counted as
    ``truncated_captions``; a word past the cut is not kept and counted as ``beyond_context``)."""


@dataclass
class Batch:
    """The readable images of one slice of the dataset (``indices`` into it) and, in generate mode, their
    processor inputs (prepared by the loader); ``captions`` collects every row's generated caption."""

    indices: list[int]
    samples: list
    images: list | None = None
    inputs: dict | None = None
    captions: list[dict] = field(default_factory=list)

    def pin_memory(self) -> "Batch":
        """Page-lock the processor inputs (the DataLoader calls this with ``pin_memory=True``)."""
        if self.inputs is not None:
            self.inputs = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in self.inputs.items()}
        return self


def image_entry(image, root: Path | None) -> str:
    """How a metadata row names its image: relative to the dataset's root (so the store and its data can move
    together or apart), absolute when it lies outside the root or there is none."""
    path = Path(image).resolve()
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


def row_meta(index: int, sample, token: str, caption: str, position: int, word: str,
             root: Path | None = None) -> dict:
    """The metadata row of one kept (image, word of interest)."""
    row = {"id": sample.id, "index": index, "token": token, "image": image_entry(sample.image, root),
           "caption": caption, "references": sample.captions, "position": position, "word": word}
    if sample.attributes is not None:
        row["attributes"] = sample.attributes
    return row


def _concat(parts: list[dict], layers) -> dict:
    import torch

    return {layer: torch.cat([p[layer] for p in parts]) for layer in layers} if parts else {}


def generate_rows(adapter, batch: Batch, layers, matchers: dict, keep: str, counts: dict, prompt: str,
                  max_new_tokens: int, min_new_tokens: int = 0, root: Path | None = None):
    """Caption the batch once; keep each word's first predicting state. ``matchers``: word -> WordMatcher;
    ``counts``: word -> its counts. Returns ``(features, meta)``, the rows grouped by word (in ``matchers``'
    order), each word's rows in dataset order."""
    inputs = adapter.to_device(batch.inputs) if batch.inputs is not None else \
        adapter.encode(batch.images, [prompt] * len(batch.samples))
    with StepRecorder(adapter, layers) as recorder:
        new_tokens = adapter.generate(inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens).tolist()
    rows, steps, meta = select_generated(adapter, batch, new_tokens, matchers, keep, counts, root)
    return recorder.gather(rows, steps), meta


def select_generated(adapter, batch: Batch, new_tokens: list, matchers: dict, keep: str, counts: dict,
                     root: Path | None = None) -> tuple[list[int], list[int], list[dict]]:
    """The kept (row, word) pairs of a generated batch: ``(rows, steps, meta)``, each word's first predicting
    step, grouped by word (in ``matchers``' order); counts each word and records every row's caption in
    ``batch.captions``."""
    texts = decode(adapter, new_tokens)
    rows, steps, meta = [], [], []
    kept_words: list[list[str]] = [[] for _ in new_tokens]
    for token, matcher in matchers.items():
        for row, (index, sample, ids) in enumerate(zip(batch.indices, batch.samples, new_tokens)):
            found = matcher.first_piece(adapter.tokenizer, ids)
            if found is None:
                counts[token]["not_generated"] += 1
            elif keep == "both" and not matcher.in_any(sample.captions):
                counts[token]["generated_not_in_reference"] += 1
            else:
                step, word, text = found
                rows.append(row)
                steps.append(step)
                meta.append(row_meta(index, sample, token, text.strip(), step, word, root))
                kept_words[row].append(token)
                counts[token]["kept"] += 1
    for row, (index, sample) in enumerate(zip(batch.indices, batch.samples)):
        batch.captions.append({"index": index, "id": sample.id, "caption": texts[row], "kept": bool(kept_words[row]),
                               "tokens": kept_words[row]})
    return rows, steps, meta


def teacher_rows(adapter, batch: Batch, layers, matchers: dict, counts: dict, prompt: str,
                 root: Path | None = None):
    """For every word, read the first reference caption holding it after the prompt (one forward pass per
    word) and keep the state from which the word's first piece is predicted."""
    features, meta = [], []
    for token, matcher in matchers.items():
        part, rows = _teacher_word(adapter, batch, layers, token, matcher, counts[token], prompt, root)
        if rows:
            features.append(part)
            meta += rows
    return _concat(features, layers), meta


def _teacher_word(adapter, batch: Batch, layers, token, matcher, counts: dict, prompt: str, root):
    import torch

    tokenizer = adapter.tokenizer
    chosen, texts, targets = [], [], []
    sep = "" if prompt[-1:].isspace() else " "
    for row, sample in enumerate(batch.samples):
        caption = next((c for c in sample.captions if matcher.find(c)), None)
        if caption is None:
            counts["not_in_reference"] += 1
            continue
        start, word = matcher.find(caption)
        chosen.append(row)
        texts.append(prompt + sep + caption)
        targets.append((len(prompt) + len(sep) + start, word, caption))
    if not chosen:
        return {}, []
    if teacher_appends(adapter, prompt):
        return _teacher_appended(adapter, batch, layers, token, chosen, targets, counts, prompt, root)
    inputs = adapter.encode([batch.images[r] for r in chosen], texts)
    context = context_length(adapter.model)
    if context is not None and inputs["input_ids"].shape[1] > context:
        chosen, texts, targets, inputs = _within_context(adapter, batch.images, matcher, counts, prompt, sep,
                                                         context, chosen, texts, targets, inputs)
        if not chosen:
            return {}, []
    ids = inputs["input_ids"]
    length = ids.shape[1]
    positions, meta = [], []
    for j, (text, (char, word, caption)) in enumerate(zip(texts, targets)):
        text_ids, piece = pieces(tokenizer, text, char)
        position = length - (len(text_ids) - piece)  # the caption sits at the end of a left-padded row
        if int(ids[j, position]) != text_ids[piece]:
            raise MMConceptsError(f"teacher mode cannot align the caption tokens of {adapter.model_id}; "
                                  "use --mode generate")
        positions.append(position - 1)  # the state from which the piece is predicted
        row = chosen[j]
        meta.append(row_meta(batch.indices[row], batch.samples[row], token, caption, piece, word, root))
        counts["kept"] += 1
    rows = torch.arange(len(chosen))
    with PositionRecorder(adapter, layers, rows, torch.tensor(positions)) as recorder, torch.inference_mode():
        adapter.model(**inputs)
    return recorder.gather(), meta


def _teacher_appended(adapter, batch: Batch, layers, token, chosen, targets, counts: dict, prompt: str, root):
    """Teacher mode for a processor that puts tokens after the prompt's text: each caption's tokens before the
    word follow the whole prompt, where generation writes (:func:`~mmconcepts.models.prompts.append_tokens`);
    the state is each row's last."""
    import torch

    head = len(prompt) + (0 if prompt[-1:].isspace() else 1)  # targets count from the prompt's start
    keep, prefixes = [], []
    for row, (char, word, caption) in zip(chosen, targets):
        ids, piece = pieces(adapter.tokenizer, caption, char - head)
        keep.append((row, piece, caption, word, len(ids)))
        prefixes.append(ids[:piece])
    inputs = append_tokens(adapter, [batch.images[r] for r, *_ in keep], prompt, prefixes)
    context = context_length(adapter.model)
    if context is not None:
        lengths = (last_positions(inputs) + 1).tolist()
        fits = [j for j, n in enumerate(lengths) if n < context]  # the piece's own position is inside too
        counts["beyond_context"] += len(keep) - len(fits)
        counts["truncated_captions"] += sum(1 for n, prefix, item in zip(lengths, prefixes, keep)
                                            if n - len(prefix) + item[4] > context)
        if len(fits) < len(keep):
            keep, prefixes = [keep[j] for j in fits], [prefixes[j] for j in fits]
            if not keep:
                return {}, []
            inputs = append_tokens(adapter, [batch.images[r] for r, *_ in keep], prompt, prefixes)
    meta = [row_meta(batch.indices[row], batch.samples[row], token, caption, piece, word, root)
            for row, piece, caption, word, _ in keep]
    counts["kept"] += len(keep)
    rows = torch.arange(len(keep))
    with PositionRecorder(adapter, layers, rows, last_positions(inputs)) as recorder, torch.inference_mode():
        adapter.model(**inputs)
    return recorder.gather(), meta


def _within_context(adapter, images, matcher, counts: dict, prompt: str, sep: str, context: int, chosen: list,
                    texts: list, targets: list, inputs: dict):
    """Cut every reference caption whose row (image, prompt and caption tokens) exceeds the model's
    ``context``, at the last token that fits: the model never reads a position past its context. Each cut
    caption counts in ``truncated_captions``; a row whose word now lies past the cut is dropped and counts in
    ``beyond_context``. Returns the rows left and their inputs, encoded again."""
    tokenizer = adapter.tokenizer
    head = len(prompt) + len(sep)
    cut_rows: set[int] = set()
    for _ in range(8):  # a cut text may tokenize a little differently: cut again until every row fits
        width = int(inputs["input_ids"].shape[1])
        if width <= context:
            break
        mask = inputs.get("attention_mask")
        lengths = [int(n) for n in mask.sum(1).tolist()] if mask is not None else [width] * len(texts)
        keep = []
        for j, (text, (char, word, caption)) in enumerate(zip(texts, targets)):
            excess = lengths[j] - context
            if excess <= 0:
                keep.append(j)
                continue
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            fit = len(offsets) - excess  # the text tokens that fit
            if fit <= 0 or offsets[fit][0] < len(prompt):
                taken = lengths[j] - len(offsets) + sum(1 for a, _ in offsets if a < len(prompt))
                raise MMConceptsError(f"the prompt takes {taken} tokens (image included), {adapter.model_id}'s whole "
                                      f"context of {context}; use a shorter --instruction or a model with a longer "
                                      "context")
            cut_rows.add(chosen[j])
            caption = text[head:max(offsets[fit][0], head)].rstrip()
            found = matcher.find(caption)
            if found != (char - head, word):  # the word lies past the cut: not read, not kept
                counts["beyond_context"] += 1
                continue
            texts[j] = prompt + sep + caption
            targets[j] = (char, word, caption)
            keep.append(j)
        chosen, texts, targets = [chosen[j] for j in keep], [texts[j] for j in keep], [targets[j] for j in keep]
        if not chosen:
            break
        inputs = adapter.encode([images[r] for r in chosen], texts)
    else:
        raise MMConceptsError(f"teacher mode cannot cut the captions of {adapter.model_id} to its context of "
                              f"{context} tokens; use --mode generate")
    counts["truncated_captions"] += len(cut_rows)
    return chosen, texts, targets, inputs
