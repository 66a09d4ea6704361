"""Where each image token of a vision-language model looks: its box in the original image's pixels.

A processor turns an image of ``W x H`` pixels into the patches its vision tower reads, and the model turns
those into image tokens in the prompt. Each family does it its own way:

- **LLaVA-1.5** (``llava``): optional pad to a square (``do_pad``), resize of the shortest edge, centre crop,
  one grid of ``crop / patch`` cells (a leading CLS token with ``vision_feature_select_strategy="full"``);
- **LLaVA-NeXT** (``llava_next``): the whole image squashed to one base tile, then the image resized into
  the best of ``image_grid_pinpoints`` (aspect kept, padded), cut into tiles; the model drops the padding
  cells again and ends every row with a newline token (no box);
- **Qwen2-VL / Qwen2.5-VL**: ``smart_resize`` to multiples of ``patch_size * merge_size``; one token per
  ``merge x merge`` block of patches, row-major;
- **Idefics3 / SmolVLM**: the longest edge resized, with ``do_image_splitting`` the image resized to
  multiples of ``max_image_size`` and cut into tiles (row-major) followed by the whole image squashed to one
  tile; every tile gives ``image_seq_len`` tokens after a ``scale_factor`` pixel shuffle (one token per
  ``scale x scale`` block of patches, row-major).

:func:`patch_layout` undoes this from the processor's settings and the image's size: a
:class:`~mmconcepts.models.image_layout.PatchLayout` of one or several
:class:`~mmconcepts.models.image_layout.TokenGrid` (each an evenly divided box of the original image, with
the index of the image token of every cell). The geometry uses transformers' own helpers where they are pure
functions (``select_best_resolution``, ``get_resize_output_image_size``, Qwen2-VL's ``smart_resize``). The
count of image tokens it implies is checked against the prompt (:func:`image_token_positions`), so a
processor that does something else is an error rather than a wrong map.

Boxes are ``(x0, y0, x1, y1)`` in the original image's pixel coordinates (pixel edges: the image spans
``(0, 0, W, H)``); a box may reach outside the image where the processor padded it.
"""

from __future__ import annotations

import math

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.image_layout import PatchLayout, TokenGrid

__all__ = ["LAYOUTS", "image_token_id", "image_token_id_of", "image_token_positions", "layout_for", "patch_layout",
           "uniform_layout"]


# ---- the image tokens in a prompt -------------------------------------------------------------------------

def image_token_id(adapter, input_ids=None) -> int:
    """:func:`image_token_id_of` a loaded :class:`~mmconcepts.models.ModelAdapter`."""
    return image_token_id_of(adapter.processor, adapter.model.config, input_ids, f"'{adapter.model_id}'")


def image_token_id_of(processor, config, input_ids=None, name: str = "the model") -> int:
    """The id of the image placeholder token the model replaces by image features: of the ids the processor
    and the config name, the one ``input_ids`` hold most (a processor may name a placeholder the prompt no
    longer holds: Ovis2's ``<image>`` becomes ``<IMG_ATOM>`` tokens, Gemma 3's ``<start_of_image>`` is
    followed by ``<image_soft_token>`` ones).

    Raises
    ------
    MMConceptsError
        When neither the processor nor the config names one, or ``input_ids`` hold none of them (a model
        that does not read images as tokens).
    """
    found = []
    for owner, attribute in ((processor, "image_token_id"), (config, "image_token_id"),
                             (config, "image_token_index")):
        value = getattr(owner, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and value not in found:
            found.append(value)
    if not found:
        raise MMConceptsError(f"{name} names no image token (image_token_id); concept maps need a model that reads "
                              "an image as tokens of its prompt")
    counts = [int((input_ids == v).sum()) for v in found] if input_ids is not None else [1] * len(found)
    if max(counts) == 0:
        raise MMConceptsError(f"the prompt of {name} holds none of its image tokens ({', '.join(map(str, found))}); "
                              "concept maps need a model that reads an image as tokens of its prompt")
    return found[counts.index(max(counts))]


def image_token_positions(input_ids, token_id: int):
    """Positions (a 1-D long tensor) of the image tokens in one row of ``input_ids``."""
    return (input_ids == token_id).nonzero().reshape(-1)


# ---- per family ------------------------------------------------------------------------------------------

def _get(size, key):
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _crop_offset(have: int, want: int) -> int:
    """Where a centre crop of ``want`` starts in ``have`` pixels (negative: the image is padded first)."""
    return -((want - have) // 2) if want > have else int((have - want) / 2.0)


def _llava(processor, config, width: int, height: int) -> PatchLayout:
    from transformers.image_transforms import get_resize_output_image_size

    import numpy as np

    ip = processor.image_processor
    patch = getattr(processor, "patch_size", None) or config.vision_config.patch_size
    x0, y0, w, h = 0.0, 0.0, float(width), float(height)  # the current image's box in original pixels
    pw, ph = width, height  # its size in its own pixels
    if getattr(ip, "do_pad", False):
        side = max(pw, ph)
        x0, y0 = x0 - (side - pw) // 2, y0 - (side - ph) // 2
        w = h = float(side)
        pw = ph = side
    if getattr(ip, "do_resize", True):
        size = ip.size
        if _get(size, "shortest_edge"):
            nh, nw = get_resize_output_image_size(np.zeros((ph, pw, 1)), size=_get(size, "shortest_edge"),
                                                  default_to_square=False, input_data_format="channels_last")
        elif _get(size, "height") and _get(size, "width"):
            nh, nw = _get(size, "height"), _get(size, "width")
        else:
            raise MMConceptsError(f"cannot read the resize of {type(ip).__name__} ({size}); concept maps do not "
                                  "support this processor")
        pw, ph = int(nw), int(nh)
    scale_x, scale_y = w / pw, h / ph  # original pixels per resized pixel
    if getattr(ip, "do_center_crop", False):
        cw, ch = _get(ip.crop_size, "width"), _get(ip.crop_size, "height")
        x0, y0 = x0 + _crop_offset(pw, cw) * scale_x, y0 + _crop_offset(ph, ch) * scale_y
        pw, ph = cw, ch
    rows, cols = ph // patch, pw // patch
    box = (x0, y0, x0 + cols * patch * scale_x, y0 + rows * patch * scale_y)
    cls = 1 if getattr(processor, "vision_feature_select_strategy", "default") == "full" else 0
    n = rows * cols
    return PatchLayout((width, height), n + cls, (TokenGrid(rows, cols, box, tuple(range(cls, n + cls))),),
                       config.model_type)


def _llava_next(processor, config, width: int, height: int) -> PatchLayout:
    from transformers.image_processing_utils import select_best_resolution

    ip = processor.image_processor
    if config.model_type == "llava_next" and getattr(processor, "vision_feature_select_strategy", "default") != "default":
        raise MMConceptsError("concept maps of LLaVA-NeXT need vision_feature_select_strategy='default'")
    tile = config.vision_config.image_size
    side = tile // config.vision_config.patch_size  # cells per tile side
    base = TokenGrid(side, side, (0, 0, width, height), tuple(range(side * side)), "base")
    best_h, best_w = select_best_resolution((height, width), [list(p) for p in ip.image_grid_pinpoints])
    # the image resized into the best resolution, aspect kept (transformers' get_patch_output_size), then padded
    scale_w, scale_h = best_w / width, best_h / height
    if scale_w < scale_h:
        new_w, new_h = best_w, min(math.ceil(height * scale_w), best_h)
    else:
        new_h, new_w = best_h, min(math.ceil(width * scale_h), best_w)
    paste_x, paste_y = (best_w - new_w) // 2, (best_h - new_h) // 2
    grid_h, grid_w = (best_h // tile) * side, (best_w // tile) * side
    # the model drops the padding cells again (modeling_llava_next.unpad_image)
    top = left = 0
    rows, cols = grid_h, grid_w
    if width / height > grid_w / grid_h:
        pad = (grid_h - int(round(height * (grid_w / width), 7))) // 2
        top, rows = pad, grid_h - 2 * pad
    else:
        pad = (grid_w - int(round(width * (grid_h / height), 7))) // 2
        left, cols = pad, grid_w - 2 * pad
    cell_x, cell_y = best_w / grid_w, best_h / grid_h  # padded-image pixels per cell
    to_x, to_y = width / new_w, height / new_h
    box = ((left * cell_x - paste_x) * to_x, (top * cell_y - paste_y) * to_y,
           ((left + cols) * cell_x - paste_x) * to_x, ((top + rows) * cell_y - paste_y) * to_y)
    if config.model_type == "llava_onevision" and math.sqrt(rows * cols / (9 * side * side)) > 1.1:
        raise MMConceptsError("concept maps cannot place LLaVA-OneVision's tokens of an image this large (its grid "
                              "is resized, anyres_max_9); use --heatmaps occlusion")
    start = side * side
    tokens = tuple(start + r * (cols + 1) + c for r in range(rows) for c in range(cols))  # + a newline a row
    tiles = TokenGrid(rows, cols, box, tokens, "tiles")
    return PatchLayout((width, height), start + rows * (cols + 1), (base, tiles), config.model_type)


def _qwen2_vl(processor, config, width: int, height: int) -> PatchLayout:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ip = processor.image_processor
    patch, merge = int(ip.patch_size), int(ip.merge_size)
    low = _get(ip.size, "shortest_edge") or getattr(ip, "min_pixels", None)
    high = _get(ip.size, "longest_edge") or getattr(ip, "max_pixels", None)
    if getattr(ip, "do_resize", True):
        new_h, new_w = smart_resize(height, width, factor=patch * merge, min_pixels=low, max_pixels=high)
    else:
        new_h, new_w = height, width
    rows, cols = new_h // (patch * merge), new_w // (patch * merge)
    box = (0, 0, width * (cols * patch * merge) / new_w, height * (rows * patch * merge) / new_h)
    return PatchLayout((width, height), rows * cols, (TokenGrid(rows, cols, box, tuple(range(rows * cols))),),
                       config.model_type)


def _idefics3_resize(height: int, width: int, longest: int) -> tuple[int, int]:
    """Idefics3's first resize: the longest edge to ``longest`` (the other one even), at most 4096."""
    ratio = width / height
    if width >= height:
        width, height = longest, int(longest / ratio)
        height += height % 2
    else:
        height, width = longest, int(longest * ratio)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    ratio = width / height
    if width >= height and width > 4096:
        width, height = 4096, int(4096 / ratio)
    elif height > width and height > 4096:
        height, width = 4096, int(4096 * ratio)
    return max(height, 1), max(width, 1)


def _idefics3(processor, config, width: int, height: int) -> PatchLayout:
    ip = processor.image_processor
    tile = int(_get(ip.max_image_size, "longest_edge"))
    patch = int(config.vision_config.patch_size)
    scale = int(getattr(config, "scale_factor", 1) or 1)
    side = tile // patch // scale  # tokens per tile side after the pixel shuffle
    seq = int(getattr(processor, "image_seq_len", side * side))
    if seq != side * side:
        raise MMConceptsError(f"the processor's image_seq_len {seq} is not ({tile} / {patch} / {scale})^2; "
                              "its image tokens cannot be placed")
    whole = (0, 0, width, height)
    n_rows = n_cols = 0
    if getattr(ip, "do_image_splitting", False):
        h, w = (height, width)
        if getattr(ip, "do_resize", True):
            h, w = _idefics3_resize(height, width, int(_get(ip.size, "longest_edge")))
        ratio = w / h  # resize_for_vision_encoder: multiples of the tile size
        if w >= h:
            w = math.ceil(w / tile) * tile
            h = math.ceil(int(w / ratio) / tile) * tile
        else:
            h = math.ceil(h / tile) * tile
            w = math.ceil(int(h * ratio) / tile) * tile
        if h > tile or w > tile:
            n_rows, n_cols = h // tile, w // tile
    grids = []
    if n_rows:
        rows, cols = n_rows * side, n_cols * side
        tokens = tuple(((r // side) * n_cols + c // side) * seq + (r % side) * side + c % side
                       for r in range(rows) for c in range(cols))
        grids.append(TokenGrid(rows, cols, whole, tokens, "tiles"))
    offset = n_rows * n_cols * seq
    grids.append(TokenGrid(side, side, whole, tuple(range(offset, offset + seq)), "global"))
    return PatchLayout((width, height), offset + seq, tuple(grids), config.model_type)


#: ``model_type`` -> the written-out layout (every other family's is measured: :mod:`~.patch_probe`).
LAYOUTS = {"llava": _llava, "llava_next": _llava_next, "llava_onevision": _llava_next, "qwen2_vl": _qwen2_vl, "qwen2_5_vl": _qwen2_vl,
           "idefics3": _idefics3, "smolvlm": _idefics3}


def uniform_layout(size: tuple[int, int], cells: int = 8) -> PatchLayout:
    """A ``cells x cells`` grid over the whole image, for a model whose image tokens have no place on it (the
    cells occlusion masks)."""
    width, height = (int(v) for v in size)
    grid = TokenGrid(cells, cells, (0, 0, width, height), tuple(range(cells * cells)), "image")
    return PatchLayout((width, height), cells * cells, (grid,), "uniform")


def layout_for(processor, config, size: tuple[int, int], prompt: str | None = None) -> PatchLayout:
    """The layout of the image tokens of an image of ``size = (width, height)`` pixels for a processor and a
    model config: the written-out geometry of :data:`LAYOUTS` (chosen by ``config.model_type``), else the
    layout measured from the processor with ``prompt`` (:func:`~mmconcepts.models.patch_probe.probe_layout`).

    Raises
    ------
    MMConceptsError
        For a family whose image tokens cannot be placed (one line saying why).
    """
    family = getattr(config, "model_type", "")
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise MMConceptsError(f"the image has no pixels ({width} x {height})")
    layout = LAYOUTS.get(family)
    if layout is not None:
        return layout(processor, config, width, height)
    if prompt is None:
        raise MMConceptsError(f"concept maps cannot place the image tokens of '{family}' models without a prompt; "
                              f"written out: {', '.join(sorted(LAYOUTS))}")
    from mmconcepts.models.patch_probe import probe_layout

    return probe_layout(processor, config, (width, height), prompt)


def patch_layout(adapter, size: tuple[int, int]) -> PatchLayout:
    """:func:`layout_for` of a loaded :class:`~mmconcepts.models.ModelAdapter` (its processor, config and
    prompt), computed once per image size."""
    cache = adapter.__dict__.setdefault("_layouts", {})
    key = tuple(int(v) for v in size)
    if key not in cache:
        prompt = adapter.prompt() if getattr(adapter.model.config, "model_type", "") not in LAYOUTS else None
        cache[key] = layout_for(adapter.processor, adapter.model.config, key, prompt)
    return cache[key]
