"""Where each image token looks, measured from the processor itself: the layout of any family's image tokens.

:mod:`~mmconcepts.models.patches` writes out the geometry of a few families. Every other family's layout is
*measured*: the processor is given, at the image's size, a black image, a white one and two ramps whose
grey level is each pixel's column (``x``) and row (``y``). Resizing, cropping, padding and normalising are
affine in the pixel values, so in every element of ``pixel_values`` the ramps' values, set between the
black and the white ones, give the original coordinate the element was read from, and elements equal in
the black and the white image are padding. No resize rule is repeated here.

The image tokens of the prompt (the most frequent of the processor's and the config's image token ids) are
then assigned to what the processor returned, in order:

``image_grid_thw`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V, ...)
    rows of ``pixel_values`` are patches, ``m x m`` consecutive rows make one token (``m`` from the counts),
    the tokens a ``h/m x w/m`` grid, row-major;
``spatial_shapes`` (LFM2-VL, ...)
    each crop's rows are its patches row-major on a ``spatial_shapes`` grid; tokens are ``m x m`` blocks;
``image_patches`` (Fuyu)
    rows are patches, row-major, one token each, as many across as fit;
``pixel_values`` of images ``... x 3 x h x w`` (PaliGemma, Gemma 3, InternVL, Aya Vision, Ovis2, Janus,
Chameleon, Mistral 3, ...)
    the images are tiles in token order, each tile's tokens one grid over its valid (unpadded) part,
    row-major, as many cells across and down as its aspect asks.

A grid hypothesis is kept only when every token's *measured* box (the coordinates its pixels were read
from) lies within its cell, so a processor that does something else is a one-line refusal, never a wrong map.
Tiles laid side by side are joined into one grid; a thumbnail of the whole image stays a grid of its own.
"""

from __future__ import annotations

import math

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.image_layout import PatchLayout, TokenGrid
from mmconcepts.models.patches import image_token_id_of

__all__ = ["NOT_SPATIAL", "probe_layout"]

#: ``model_type`` -> why its decoder holds no image tokens laid on the image (maps use occlusion instead).
NOT_SPATIAL = {
    "blip-2": "the decoder reads 32 Q-Former queries, not image patches",
    "instructblip": "the decoder reads 32 Q-Former queries, not image patches",
    "instructblipvideo": "the decoder reads Q-Former queries, not image patches",
    "kosmos-2": "the decoder reads 64 latent queries of a resampler, not image patches",
    "idefics2": "the decoder reads the perceiver resampler's latents, not image patches",
    "idefics": "the decoder reads the image through cross-attention to a resampler",
    "mllama": "the decoder reads the image through cross-attention, not as tokens of the prompt",
    "florence2": "the image tokens are read by the encoder, not the decoder",
}
_TOLERANCE = 0.34  # of a cell: how far a token's measured box may reach past its cell


def _probes(size):
    import numpy as np
    from PIL import Image

    width, height = size
    x = ((np.arange(width) + 0.5) / width * 255).round().astype(np.uint8)
    y = ((np.arange(height) + 0.5) / height * 255).round().astype(np.uint8)
    ramp_x = np.repeat(np.broadcast_to(x[None, :], (height, width))[..., None], 3, axis=2)
    ramp_y = np.repeat(np.broadcast_to(y[:, None], (height, width))[..., None], 3, axis=2)
    return [Image.new("RGB", size, (0, 0, 0)), Image.new("RGB", size, (255, 255, 255)),
            Image.fromarray(np.ascontiguousarray(ramp_x)), Image.fromarray(np.ascontiguousarray(ramp_y))]


def _array(values):
    """``pixel_values`` as one float64 array (a list of tensors, as Fuyu returns, stacked as tiles)."""
    import numpy as np

    if isinstance(values, (list, tuple)):
        parts = [_array(v) for v in values]
        if len({p.shape[-3:] for p in parts}) != 1:
            raise MMConceptsError("the processor's images differ in size; its image tokens cannot be placed")
        return np.concatenate([p.reshape(-1, *p.shape[-3:]) for p in parts])
    if hasattr(values, "float"):
        values = values.float().numpy()
    return np.asarray(values, dtype=np.float64)


def measure(processor, prompt: str, size) -> dict:
    """The processor's outputs for the probes: ``coords`` (``2 x ...`` original x and y of every element of
    ``pixel_values``, NaN on padding), the other outputs, and the image tokens' count."""
    import numpy as np

    from mmconcepts.models.base import encode_inputs

    runs = [encode_inputs(processor, [probe], [prompt]) for probe in _probes(size)]
    key = next((k for k in ("pixel_values", "image_patches") if k in runs[0]), None)
    if key is None:
        raise MMConceptsError("the processor returns no pixel_values; its image tokens cannot be placed")
    pv = [_array(r[key]) for r in runs]
    if len({a.shape for a in pv}) != 1:
        raise MMConceptsError("the processor's pixel_values change shape with the image's content; its image "
                              "tokens cannot be placed")
    black, white, ramp_x, ramp_y = pv
    span = white - black
    scale = np.abs(span).max() if span.size else 0.0
    valid = np.abs(span) > 0.9 * scale if scale > 0 else np.zeros(span.shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        fx = np.where(valid, (ramp_x - black) / span, np.nan) * size[0]
        fy = np.where(valid, (ramp_y - black) / span, np.nan) * size[1]
    return {"coords": np.stack([fx, fy]), "encoded": runs[0], "shape": pv[0].shape, "key": key}


def _bbox(fx, fy):
    import numpy as np

    if not np.isfinite(fx).any():
        return None
    return (float(np.nanmin(fx)), float(np.nanmin(fy)), float(np.nanmax(fx)), float(np.nanmax(fy)))


def _fit_grid(boxes: list, rows: int, cols: int, tokens: tuple, name: str) -> TokenGrid | None:
    """The grid whose cells hold the measured ``boxes`` (row-major; ``None`` for padding), or ``None`` when
    they do not line up as ``rows x cols`` cells."""
    import numpy as np

    cells = [(i // cols, i % cols, b) for i, b in enumerate(boxes) if b is not None]
    if not cells:
        return None
    edges = []
    for axis, (lo, hi) in ((1, (0, 2)), (0, (1, 3))):
        idx = np.array([c[axis] for c in cells], dtype=float)
        centre = np.array([(c[2][lo] + c[2][hi]) / 2 for c in cells])
        if len(set(idx.tolist())) > 1:
            step, start = np.polyfit(idx + 0.5, centre, 1)
        else:  # one cell across: its measured extent
            start = min(c[2][lo] for c in cells)
            step = max(c[2][hi] for c in cells) - start
            start = start - idx[0] * step
        edges.append((float(start), float(step)))
    (x0, cw), (y0, ch) = edges
    if cw <= 0 or ch <= 0:
        return None
    for r, c, (bx0, by0, bx1, by1) in cells:  # every measured box inside its cell
        if (bx0 < x0 + (c - _TOLERANCE) * cw or bx1 > x0 + (c + 1 + _TOLERANCE) * cw
                or by0 < y0 + (r - _TOLERANCE) * ch or by1 > y0 + (r + 1 + _TOLERANCE) * ch):
            return None
    return TokenGrid(rows, cols, (x0, y0, x0 + cols * cw, y0 + rows * ch), tokens, name)


def _shape_for(count: int, height: float, width: float) -> tuple[int, int] | None:
    """``rows x cols == count`` closest to the aspect ``height / width``."""
    best = None
    for rows in range(1, count + 1):
        if count % rows:
            continue
        cols = count // rows
        err = abs(math.log((rows / cols) / (height / width)))
        if best is None or err < best[0]:
            best = (err, rows, cols)
    return best[1:] if best else None


def _tiles(m: dict, n: int) -> list[TokenGrid]:
    import numpy as np

    coords = m["coords"]
    h, w = coords.shape[-2:]
    tiles = coords.reshape(2, -1, coords.shape[-3], h, w)  # 2 x tiles x C x h x w
    per_tile = [bool(np.isfinite(tiles[0, t]).any()) for t in range(tiles.shape[1])]
    used = [t for t, ok in enumerate(per_tile) if ok]
    if not used or n % len(used):
        raise MMConceptsError(f"{n} image tokens cannot be shared by {len(used)} image tiles")
    count = n // len(used)
    grids, start = [], 0
    for number, t in enumerate(used):
        fx, fy = tiles[0, t].mean(0), tiles[1, t].mean(0)  # channels alike
        ok_rows = np.where(np.isfinite(fx).any(1))[0]
        ok_cols = np.where(np.isfinite(fx).any(0))[0]
        # the tokens cover the whole tile (padding included: Janus) or only its valid part (Pixtral's batch pad)
        extents = [(0, 0, h, w), (ok_rows[0], ok_cols[0], ok_rows[-1] + 1 - ok_rows[0], ok_cols[-1] + 1 - ok_cols[0])]
        grid = None
        for top, left, hh, ww in extents:
            shape = _shape_for(count, hh, ww)
            if shape is None:
                continue
            rows, cols = shape
            boxes = []
            for r in range(rows):
                for c in range(cols):
                    ys = slice(top + int(r * hh / rows), top + int((r + 1) * hh / rows))
                    xs = slice(left + int(c * ww / cols), left + int((c + 1) * ww / cols))
                    boxes.append(_bbox(fx[ys, xs], fy[ys, xs]))
            grid = _fit_grid(boxes, rows, cols, tuple(range(start, start + count)), "tiles")
            if grid is not None:
                break
        if grid is None:
            return []
        grids.append(grid)
        start += count
    return _name_thumbnail(grids)


def _patch_rows(m: dict, n: int, groups: list[tuple[int, int]]) -> list[TokenGrid]:
    """Rows of ``pixel_values`` as patches: ``groups`` the ``(rows, cols)`` patch grid of each crop, its patches
    either row-major (``spatial_shapes``) or in ``m x m`` blocks (``image_grid_thw``), detected by fit."""
    coords = m["coords"].reshape(2, -1, m["coords"].shape[-1])  # 2 x all patches x elements
    patches = sum(r * c for r, c in groups)
    merge = math.isqrt(patches // n) if n and patches % n == 0 else 0
    if merge < 1 or merge * merge * n != patches:
        return []
    grids, start, offset = [], 0, 0
    # crops one after the other (Qwen), or each padded to the same number of rows (LFM2's max_num_patches)
    per_crop = coords.shape[1] // len(groups) if coords.shape[1] != patches else None
    for number, (pr, pc) in enumerate(groups):
        base = number * per_crop if per_crop else offset
        rows, cols = pr // merge, pc // merge
        for blocked in (True, False):
            boxes = []
            for r in range(rows):
                for c in range(cols):
                    if blocked:  # the m x m patches of a token are consecutive rows
                        k = r * cols + c
                        idx = [base + k * merge * merge + j for j in range(merge * merge)]
                    else:  # patches row-major over the crop
                        idx = [base + (r * merge + i) * pc + c * merge + j for i in range(merge) for j in range(merge)]
                    boxes.append(_bbox(coords[0, idx], coords[1, idx]))
            grid = _fit_grid(boxes, rows, cols, tuple(range(start, start + rows * cols)), "tiles")
            if grid is not None:
                break
        if grid is None:
            return []
        grids.append(grid)
        start += rows * cols
        offset += pr * pc
    return _name_thumbnail(grids)


def _name_thumbnail(grids: list[TokenGrid]) -> list[TokenGrid]:
    """The one grid over the whole image among several is the thumbnail (``"global"``)."""
    if len(grids) < 2:
        return grids
    areas = [(g.box[2] - g.box[0]) * (g.box[3] - g.box[1]) for g in grids]
    big = max(range(len(grids)), key=areas.__getitem__)
    if sorted(areas)[-2] > 0.8 * areas[big]:
        return grids
    g = grids[big]
    return [TokenGrid(g.rows, g.cols, g.box, g.tokens, "global") if i == big else x for i, x in enumerate(grids)]


def _join(grids: list[TokenGrid]) -> list[TokenGrid]:
    """Tiles laid side by side as one grid (the thumbnail, if any, left apart)."""
    tiles = [g for g in grids if g.name == "tiles"]
    if len(tiles) < 2 or len({(g.rows, g.cols) for g in tiles}) != 1:
        return grids
    rows, cols = tiles[0].rows, tiles[0].cols
    xs = sorted({round(g.box[0], 1) for g in tiles})
    ys = sorted({round(g.box[1], 1) for g in tiles})
    if len(xs) * len(ys) != len(tiles):
        return grids
    place = {(ys.index(round(g.box[1], 1)), xs.index(round(g.box[0], 1))): g for g in tiles}
    if len(place) != len(tiles):
        return grids
    tokens = []
    for R in range(len(ys) * rows):
        for C in range(len(xs) * cols):
            g = place[(R // rows, C // cols)]
            tokens.append(g.tokens[(R % rows) * cols + C % cols])
    x0, y0 = min(g.box[0] for g in tiles), min(g.box[1] for g in tiles)
    x1, y1 = max(g.box[2] for g in tiles), max(g.box[3] for g in tiles)
    joined = TokenGrid(len(ys) * rows, len(xs) * cols, (x0, y0, x1, y1), tuple(tokens), "tiles")
    return [joined] + [g for g in grids if g.name != "tiles"]


def probe_layout(processor, config, size, prompt: str) -> PatchLayout:
    """The measured :class:`~mmconcepts.models.image_layout.PatchLayout` of an image of ``size = (width, height)``
    (module docstring).

    Raises
    ------
    MMConceptsError
        When the family's decoder holds no spatial image tokens (:data:`NOT_SPATIAL`) or no grid explains
        the processor's output.
    """
    family = getattr(config, "model_type", "")
    if family in NOT_SPATIAL:
        raise MMConceptsError(f"'{family}' image tokens cannot be placed on the image: {NOT_SPATIAL[family]}")
    m = measure(processor, prompt, size)
    enc = m["encoded"]
    ids = enc["input_ids"][0]
    n = int((ids == image_token_id_of(processor, config, ids, f"'{family}'")).sum())
    grids: list[TokenGrid] = []
    shape = m["shape"]
    if "image_grid_thw" in enc:
        groups = [(int(t) * int(h), int(w)) for t, h, w in enc["image_grid_thw"].tolist()]
        grids = _patch_rows(m, n, groups)
    elif "spatial_shapes" in enc:
        groups = [(int(h), int(w)) for h, w in enc["spatial_shapes"].tolist()]
        grids = _patch_rows(m, n, groups)
    elif m["key"] == "image_patches":  # Fuyu: patches row-major, as many across as the fit says
        width, height = size
        for rows in sorted((r for r in range(1, n + 1) if n % r == 0),
                           key=lambda r: abs(math.log((r / (n // r)) / (height / width)))):
            grids = _patch_rows(m, n, [(rows, n // rows)])
            if grids:
                break
    elif len(shape) >= 3 and shape[-3] in (1, 3):
        grids = _tiles(m, n)
    if not grids:
        raise MMConceptsError(f"concept maps cannot place the {n} image tokens of '{family}' models: no grid of "
                              "the processor's output holds them; use --heatmaps occlusion")
    return PatchLayout(tuple(int(v) for v in size), n, tuple(_join(grids)), family)
