"""The image-token -> pixel-box mapping of every family, checked against the processor itself.

A white marker is planted in a dark image inside the box the layout gives one token; the processor's own
output must then be brightest in that token's patch pixels (read from ``pixel_values`` the way the model reads
them), so a wrong resize, crop, pad, tiling or token order fails. Sizes are chosen so that the resize and the
crop or padding move the boxes (a 50 x 30 image for a square-cropping processor, and so on).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.image_layout import PatchLayout, TokenGrid
from mmconcepts.models.patches import image_token_positions, layout_for


def _marked(size, box, margin=0.3):
    """A dark image with a white rectangle inside ``box`` (shrunk by ``margin`` of its size on each side)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    image = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(image).rectangle([x0 + margin * w, y0 + margin * h, x1 - margin * w - 1, y1 - margin * h - 1],
                                    fill=(255, 255, 255))
    return image


def _brightness(pixels) -> float:
    return float(np.asarray(pixels, dtype=np.float64).mean())


# ---- how each family's model reads its pixel_values, token by token (independent of patches.py) --------

def _llava_pixels(enc, patch):
    pv = enc["pixel_values"][0].numpy()
    rows, cols = pv.shape[1] // patch, pv.shape[2] // patch
    return [pv[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] for r in range(rows) for c in range(cols)]


def _qwen_pixels(enc, merge=2):
    pv = enc["pixel_values"].numpy()
    return [pv[j * merge * merge:(j + 1) * merge * merge] for j in range(pv.shape[0] // (merge * merge))]


def _idefics3_pixels(enc, patch, scale):
    frames = enc["pixel_values"][0].numpy()
    block = patch * scale
    out = []
    for frame in frames:
        side = frame.shape[1] // block
        out += [frame[:, r * block:(r + 1) * block, c * block:(c + 1) * block]
                for r in range(side) for c in range(side)]
    return out


def _llava_next_pixels(enc, layout, tile, patch):
    """Base tile cells, then the unpadded cells of the tile grid row by row, a newline (None) after each row."""
    tiles = enc["pixel_values"][0].numpy()
    side = tile // patch
    out = [tiles[0][:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] for r in range(side) for c in range(side)]
    grid = layout.grids[1]
    n_tile_cols = None
    # the full grid the unpadded one was cut from: its offset is where the grid box starts in cells
    best = enc["best"]
    n_tile_cols = best[1] // tile
    top, left = enc["offset"]
    for r in range(grid.rows):
        for c in range(grid.cols):
            R, C = r + top, c + left
            t = 1 + (R // side) * n_tile_cols + C // side
            rr, cc = R % side, C % side
            out.append(tiles[t][:, rr * patch:(rr + 1) * patch, cc * patch:(cc + 1) * patch])
        out.append(None)
    return out


def _check_marker(layout, encode, pixels_of, tokens):
    """For each token in ``tokens``: planting a marker in its box makes its patch the brightest one of its grid
    (grids overlap: a global cell's marker also lights the tile cells under it)."""
    boxes = layout.token_boxes()
    for j in tokens:
        grid = next(g for g in layout.grids if j in g.tokens)
        enc = encode(_marked(layout.size, boxes[j]))
        pixels = pixels_of(enc)
        assert len(pixels) == layout.n_tokens
        means = [(_brightness(p) if p is not None and t in grid.tokens else -np.inf) for t, p in enumerate(pixels)]
        second = sorted(means)[-2]
        assert int(np.argmax(means)) == j and means[j] - second > 0.05, (j, boxes[j], np.round(means, 2))


def _image_tokens(processor, image, token_id):
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                                          "text": "hi"}]}],
                                         add_generation_prompt=True, tokenize=False)
    enc = processor(images=[[image]], text=[text], return_tensors="pt")
    return enc, int(image_token_positions(enc["input_ids"][0], token_id).numel())


@pytest.fixture(scope="module")
def adapters(tiny_adapters):
    return tiny_adapters


@pytest.mark.parametrize("size", [(50, 30), (30, 50), (32, 32)])
def test_llava_resize_and_centre_crop(adapters, size):
    a = adapters["llava"]
    layout = layout_for(a.processor, a.model.config, size)
    grid = layout.main
    assert (grid.rows, grid.cols, layout.n_tokens) == (4, 4, 16)
    if size == (50, 30):  # shortest edge 30 -> 32: 53 x 32 (50 px -> 53 px), crop 32 from x = 10
        assert grid.box == pytest.approx((10 * 50 / 53, 0, 42 * 50 / 53, 30))
    enc, n = _image_tokens(a.processor, Image.new("RGB", size), a.processor.image_token_id)
    assert n == layout.n_tokens
    _check_marker(layout, lambda im: a.processor.image_processor(im, return_tensors="pt"),
                  lambda enc: _llava_pixels(enc, 8), [0, 5, 10, 15])


def test_llava_pad_to_square():
    from transformers import LlavaImageProcessor

    ip = LlavaImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_pad=True,
                             do_center_crop=True, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    processor = SimpleNamespace(image_processor=ip, patch_size=8, vision_feature_select_strategy="default")
    config = SimpleNamespace(model_type="llava", vision_config=SimpleNamespace(patch_size=8))
    layout = layout_for(processor, config, (48, 24))  # padded to 48 x 48: 12 rows of padding above and below
    assert layout.main.box == pytest.approx((0, -12, 48, 36))
    _check_marker(layout, lambda im: ip(im, return_tensors="pt"), lambda enc: _llava_pixels(enc, 8), [5, 6, 9, 10])


@pytest.mark.parametrize("size", [(50, 30), (30, 50), (41, 41)])
def test_qwen2_vl_dynamic_grid(adapters, size):
    a = adapters["qwen2_vl"]
    layout = layout_for(a.processor, a.model.config, size)
    enc, n = _image_tokens(a.processor, Image.new("RGB", size), a.processor.image_token_id)
    t, gh, gw = enc["image_grid_thw"][0].tolist()
    assert (layout.main.rows, layout.main.cols) == (gh // 2, gw // 2)
    assert n == layout.n_tokens
    assert layout.main.box == pytest.approx((0, 0, size[0], size[1]))
    ip = a.processor.image_processor
    last = layout.n_tokens - 1
    _check_marker(layout, lambda im: ip(im, return_tensors="pt"), _qwen_pixels, [0, 1, last // 2, last])


def test_idefics3_single_frame(adapters):
    a = adapters["idefics3"]
    layout = layout_for(a.processor, a.model.config, (50, 30))
    assert layout.n_tokens == 4 and [g.name for g in layout.grids] == ["global"]
    enc, n = _image_tokens(a.processor, Image.new("RGB", (50, 30)), a.model.config.image_token_id)
    assert n == 4
    _check_marker(layout, lambda im: a.processor.image_processor([[im]], return_tensors="pt"),
                  lambda enc: _idefics3_pixels(enc, 8, 2), [0, 1, 2, 3])


def test_idefics3_tiles_then_global(adapters):
    """With splitting, 70 x 30 is resized to 64 x 28 (longest edge 64), then to 64 x 32 (multiples of the 32 px
    tile): 1 x 2 tiles
    of 2 x 2 tokens, then the global image; the tiles form one 2 x 4 grid over the whole image."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    a = adapters["idefics3"]
    ip = Idefics3ImageProcessor(do_resize=True, size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                do_image_splitting=True, resample=3, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    processor = Idefics3Processor(image_processor=ip, tokenizer=a.processor.tokenizer, image_seq_len=4,
                                  chat_template=a.processor.chat_template)
    layout = layout_for(processor, a.model.config, (70, 30))
    tiles, glob = layout.grids
    assert (tiles.rows, tiles.cols, glob.rows, glob.cols, layout.n_tokens) == (2, 4, 2, 2, 12)
    assert tiles.tokens == (0, 1, 4, 5, 2, 3, 6, 7)  # tile-major in the prompt, row-major on the image
    enc, n = _image_tokens(processor, Image.new("RGB", (70, 30)), a.model.config.image_token_id)
    assert n == 12
    _check_marker(layout, lambda im: ip([[im]], return_tensors="pt"), lambda enc: _idefics3_pixels(enc, 8, 2),
                  [0, 3, 5, 6, 9])


def test_llava_next_tiles_unpadded(adapters):
    """A 60 x 20 image into pinpoints of 32 px tiles: the best resolution is 32 x 64 (h x w), the image is
    resized to 64 x 22 and padded by 5 rows above and below; the model drops 1 padding cell row on each side."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextImageProcessor, LlavaNextProcessor

    a = adapters["llava"]
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    ip = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                 image_grid_pinpoints=pinpoints, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    processor = LlavaNextProcessor(image_processor=ip, tokenizer=a.processor.tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", chat_template=a.processor.chat_template,
                                   num_additional_image_tokens=1)
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32,
                                                            intermediate_size=64, num_hidden_layers=1,
                                                            num_attention_heads=2),
                             image_grid_pinpoints=pinpoints)
    size = (60, 20)
    layout = layout_for(processor, config, size)
    base, tiles = layout.grids
    assert (base.rows, base.cols, tiles.rows, tiles.cols) == (4, 4, 2, 8)
    enc, n = _image_tokens(processor, Image.new("RGB", size), a.processor.image_token_id)
    assert n == layout.n_tokens == 16 + 2 * 9

    def encode(im):
        out = dict(ip(im, return_tensors="pt"))
        out.update(best=(32, 64), offset=(1, 0))
        return out

    _check_marker(layout, encode, lambda enc: _llava_next_pixels(enc, layout, 32, 8), [0, 5, 16, 20, 27, 31])


def test_planted_map_lands_on_its_cells():
    """Values on a coarse grid are spread onto the finest one by area: mass kept, in the right cells."""
    fine = TokenGrid(2, 4, (0, 0, 8, 4), tuple(range(8)), "tiles")
    coarse = TokenGrid(1, 2, (0, 0, 8, 4), (8, 9), "global")
    layout = PatchLayout((8, 4), 10, (fine, coarse))
    values = np.zeros(10)
    values[6] = 1.0  # fine cell row 1, col 2
    values[8] = 2.0  # coarse left half: 4 fine cells, 0.5 each
    grid = layout.grid_values(values)
    assert grid.shape == (2, 4)
    assert grid.tolist() == [[0.5, 0.5, 0, 0], [0.5, 0.5, 1.0, 0]]
    assert layout.token_boxes()[6].tolist() == [4, 2, 6, 4]


def test_unsupported_family_is_one_line():
    config = SimpleNamespace(model_type="paligemma")
    with pytest.raises(MMConceptsError, match="cannot place the image tokens of 'paligemma'") as info:
        layout_for(SimpleNamespace(), config, (10, 10))
    assert "\n" not in str(info.value)
