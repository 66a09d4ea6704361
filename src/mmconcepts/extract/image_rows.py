"""One batch of images through the model, ``--positions image``: the state of every image token of the prompt.

The images are selected as ``--positions token`` selects them (the word in the generated caption, or in a
reference caption in teacher mode); each kept (image, word) gives one row per image token of its prompt,
read from the prompt's own forward pass (the prefill of ``generate``, or one pass of the prompt in teacher
mode: the image tokens precede the caption, so the caption does not change them). A row's metadata is the
token row's (:func:`~mmconcepts.extract.batches.row_meta`; ``position`` is the image token's position in the
prompt) with ``patch`` (the image token's index), ``box`` (``[x0, y0, x1, y1]`` in the original image's pixels,
from :func:`~mmconcepts.models.patches.patch_layout`; ``null`` for a token with no place on the image) and, where
the dataset row has ShapesWorld ``attributes``, ``object`` (the object under the box's centre, or ``null``).
"""

from __future__ import annotations

from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.batches import Batch, row_meta, select_generated
from mmconcepts.extract.recorders import PrefillRecorder

def image_sizes(batch: Batch) -> list[tuple[int, int]]:
    """The ``(width, height)`` of every image of a batch (from the file's header where only paths are held)."""
    if batch.images is not None:
        return [tuple(im.size) for im in batch.images]
    from PIL import Image

    sizes = []
    for sample in batch.samples:
        with Image.open(sample.image) as image:
            sizes.append(tuple(image.size))
    return sizes


def image_positions(adapter, input_ids, layouts) -> list:
    """The image-token positions of every row of ``input_ids`` (1-D long tensors), checked against the rows'
    layouts (:class:`~mmconcepts.models.image_layout.PatchLayout`)."""
    from mmconcepts.models.patches import image_token_id, image_token_positions

    token = image_token_id(adapter, input_ids)
    positions = []
    for row, layout in zip(input_ids, layouts):
        found = image_token_positions(row, token)
        if found.numel() != layout.n_tokens:
            raise MMConceptsError(f"the prompt of '{adapter.model_id}' holds {found.numel()} image tokens but its "
                                  f"processor's layout gives {layout.n_tokens}; --positions image cannot place this "
                                  "model's image tokens, use --positions token")
        positions.append(found.cpu())
    return positions


def _layouts(adapter, batch: Batch) -> list:
    from mmconcepts.models.patches import patch_layout

    return [patch_layout(adapter, size) for size in image_sizes(batch)]


def _shapes_record(attributes) -> bool:
    objects = attributes.get("objects") if isinstance(attributes, dict) else None
    keys = ("shape", "colour", "size", "position", "x", "y")
    return isinstance(objects, list) and all(isinstance(o, dict) and all(k in o for k in keys) for o in objects)


def patch_meta(meta: dict, positions, layout) -> list[dict]:
    """The metadata rows of one kept (image, word) ``meta``: one per image token, with ``patch``, ``position``,
    ``box`` and, on ShapesWorld, ``object``."""
    import math

    from mmconcepts.data.shapesworld import object_at

    boxes = layout.token_boxes()
    attributes = meta.get("attributes")
    shapes = _shapes_record(attributes)
    rows = []
    for patch, position in enumerate(positions.tolist()):
        box = [float(v) for v in boxes[patch]]
        row = {**meta, "position": int(position), "patch": patch,
               "box": None if any(math.isnan(v) for v in box) else [round(v, 4) for v in box]}
        if shapes:
            row["object"] = None if row["box"] is None else \
                object_at(attributes, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        rows.append(row)
    return rows


def _expand(recorder: PrefillRecorder, rows: list[int], meta: list[dict], positions, layouts):
    features = recorder.gather(rows)
    out = []
    for row, m in zip(rows, meta):
        out += patch_meta(m, positions[row], layouts[row])
    return features, out


def generate_image_rows(adapter, batch: Batch, layers, matchers: dict, keep: str, counts: dict, prompt: str,
                        max_new_tokens: int, min_new_tokens: int = 0, root: Path | None = None):
    """Caption the batch once (the images kept as in ``--positions token``) and keep every image token's state
    of the prompt's pass; ``(features, meta)``, the rows grouped by word, then image, then image token."""
    inputs = adapter.to_device(batch.inputs) if batch.inputs is not None else \
        adapter.encode(batch.images, [prompt] * len(batch.samples))
    layouts = _layouts(adapter, batch)
    positions = image_positions(adapter, inputs["input_ids"], layouts)
    with PrefillRecorder(adapter, layers, positions) as recorder:
        new_tokens = adapter.generate(inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens).tolist()
    rows, _, meta = select_generated(adapter, batch, new_tokens, matchers, keep, counts, root)
    return _expand(recorder, rows, meta, positions, layouts)


def teacher_image_rows(adapter, batch: Batch, layers, matchers: dict, counts: dict, prompt: str,
                       root: Path | None = None):
    """Keep, for every word, the images with a reference caption holding it (as teacher mode does), and every
    image token's state of one pass of the prompt over those images (one pass a batch, whatever the words)."""
    import torch

    from mmconcepts.models.patches import patch_layout

    kept, meta = [], []
    for token, matcher in matchers.items():
        for row, (index, sample) in enumerate(zip(batch.indices, batch.samples)):
            caption = next((c for c in sample.captions if matcher.find(c)), None)
            if caption is None:
                counts[token]["not_in_reference"] += 1
                continue
            _, word = matcher.find(caption)
            kept.append(row)
            meta.append(row_meta(index, sample, token, caption, 0, word, root))
            counts[token]["kept"] += 1
    if not kept:
        return {}, []
    images = sorted(set(kept))  # each image read once
    where = {row: j for j, row in enumerate(images)}
    inputs = adapter.encode([batch.images[r] for r in images], [prompt] * len(images))
    layouts = [patch_layout(adapter, batch.images[r].size) for r in images]
    positions = image_positions(adapter, inputs["input_ids"], layouts)
    with PrefillRecorder(adapter, layers, positions) as recorder, torch.inference_mode():
        adapter.model(**inputs)
    return _expand(recorder, [where[r] for r in kept], meta, positions, layouts)

