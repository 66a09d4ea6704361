"""Images as a person sees them (EXIF orientation applied wherever a file is read), and odd image files (over
Pillow's pixel limit, a symlink loop, a directory, a truncated file) that never abort a run: extraction skips
and counts them (``--strict``: one ``error:`` line), ``explain`` / ``steer`` stop with one ``error:`` line, the
report leaves them out. Runs on the shipped ShapesWorld captioner, loaded once."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import warnings

import pytest
from PIL import ExifTags, Image

from mmconcepts.cli import main
from mmconcepts.data import ImageLoadError, load_image, open_dataset

#: Over the monkeypatched ``PIL.Image.MAX_IMAGE_PIXELS`` below (200 x 200 = 40000 > 2 x 5000, Pillow's error
#: threshold) while every other test image (at most 64 x 64) stays under it.
PIXEL_LIMIT = 5000
BIG = (200, 200)

#: EXIF orientation -> how the stored pixels are turned from the upright image (the tag says how to undo it).
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _upright() -> Image.Image:
    """48 x 32, red with a blue band on the left: its size and the band's side tell which way is up."""
    im = Image.new("RGB", (48, 32), (220, 30, 30))
    im.paste((30, 30, 220), (0, 0, 12, 32))
    return im


def _write_exif_jpeg(path, orientation: int = 6):
    """The upright image stored turned, with the EXIF orientation tag that turns it back (as a phone does)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    _upright().transpose(STORED[orientation]).save(path, "JPEG", quality=95, exif=exif)
    return path


def _assert_upright(im: Image.Image, scale: int = 1):
    assert im.size == (48 * scale, 32 * scale), f"read sideways: {im.size}"
    rgb = im.convert("RGB")
    r, _, b = rgb.getpixel((4 * scale, 16 * scale))
    assert b > 150 and r < 100, "the blue band is not on the left"
    r, _, b = rgb.getpixel((40 * scale, 16 * scale))
    assert r > 150 and b < 100, "the right side is not red"


def _write_big(path):
    Image.new("L", BIG, 128).save(path)  # a few hundred bytes: one colour compresses away
    return path


def _symlink_loop(path):
    os.symlink(path.name + ".b", path.parent / (path.name + ".a"))
    os.symlink(path.name + ".a", path.parent / (path.name + ".b"))
    os.symlink(path.name + ".a", path)
    return path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _dataset(root, odd=()):
    """Four small images captioned "a red circle", then ``odd`` (file names under images/), in that order."""
    from tests.fixtures.datasets import write_images_dataset

    write_images_dataset(root, n=4, captions=("a red circle on the left",))
    with open(root / "captions.jsonl", "a") as f:
        for name in odd:
            f.write(json.dumps({"image": f"images/{name}", "captions": ["a red circle on the left"]}) + "\n")
    return root


@pytest.fixture(scope="module")
def adapter():
    from mmconcepts.models import load_model

    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def concepts(tmp_path_factory, adapter):
    """Two grounded Semi-NMF concepts of 'circle' from 12 ShapesWorld images (teacher mode)."""
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.concepts import ground

    root = tmp_path_factory.mktemp("robust-concepts")
    write_dataset(root / "train", n=12, seed=1, split="train")
    extract(root / "train", "circle", out=root / "features", model=adapter, mode="teacher", layers=["norm"],
            dtype="float32", progress=False)
    learn(root / "features", "norm", method="semi-nmf", n_concepts=2, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    return root / "concepts"


# --- EXIF orientation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied_by_the_dataset_reader_and_the_loader(tmp_path, orientation):
    from mmconcepts.extract.loader import batches

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    _write_exif_jpeg(root / "images" / "photo.jpg", orientation)
    (root / "captions.jsonl").write_text(json.dumps({"image": "images/photo.jpg", "captions": ["a photo"]}) + "\n")
    with Image.open(root / "images" / "photo.jpg") as stored:  # the file itself is stored turned
        assert stored.size == ((48, 32) if orientation == 3 else (32, 48))
    _assert_upright(load_image(root / "images" / "photo.jpg"))
    dataset = open_dataset(root)
    _assert_upright(dataset[0].load())
    (batch, errors, end), = list(batches(dataset, 0, 1, 1, num_workers=0))
    assert errors == [] and end == 1
    _assert_upright(batch.images[0])


def test_explain_reads_the_image_upright(tmp_path, monkeypatch, adapter, concepts):
    from mmconcepts.extract import extraction
    from mmconcepts.explanations import explain

    photo = _write_exif_jpeg(tmp_path / "photo.jpg")
    seen = []
    real = extraction.represent

    def spy(model, samples, images, *args, **kwargs):
        seen.extend(images)
        return real(model, samples, images, *args, **kwargs)

    monkeypatch.setattr(extraction, "represent", spy)
    result = explain(concepts, photo, model=adapter, mode="teacher", caption="a red circle on the left")
    assert result["token"] == "circle" and len(seen) == 1
    _assert_upright(seen[0])


def test_report_thumbnails_and_map_overlays_are_upright(tmp_path):
    from mmconcepts.report.plots import overlay_png_bytes, thumbnail

    photo = _write_exif_jpeg(tmp_path / "photo.jpg")
    thumb = thumbnail(photo, 96)
    assert not thumb["missing"] and thumb["pixel"]
    _assert_upright(Image.open(io.BytesIO(base64.b64decode(thumb["src"].split(",", 1)[1]))), scale=2)
    with Image.open(io.BytesIO(overlay_png_bytes(photo, [[1.0, 0.0], [0.0, 1.0]], (0, 0, 48, 32), size=96))) as im:
        assert im.width > im.height  # the map is drawn over the upright image (its box in upright pixels)


# --- odd files: one ImageLoadError naming the file and the reason -----------------------------------------

def _truncated(path):
    buf = io.BytesIO()
    _upright().save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue()[:300])
    return path


@pytest.mark.parametrize("kind, make, reason", [
    ("too large", _write_big, "DecompressionBombError"),
    ("symlink loop", _symlink_loop, os.strerror(errno.ELOOP)),
    ("directory", lambda p: p.mkdir() or p, os.strerror(errno.EISDIR)),
    ("truncated", _truncated, "truncated"),
])
def test_an_unreadable_image_is_one_image_load_error(tmp_path, monkeypatch, kind, make, reason):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)
    path = make(tmp_path / "odd.png")
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and reason.lower() in message.lower(), message


def test_the_decompression_bomb_warning_made_an_error_is_an_image_load_error(tmp_path, monkeypatch):
    path = _write_big(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BIG[0] * BIG[1] - 1)  # over the limit, under twice it: a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageLoadError, match=r"big\.png: DecompressionBombWarning"):
            load_image(path)


# --- extraction skips and counts them; --strict stops with one line ----------------------------------------

def test_extraction_skips_and_counts_a_too_large_image_and_a_symlink_loop(tmp_path, monkeypatch, adapter):
    from mmconcepts.extract import extract, load_features

    data = _dataset(tmp_path / "data", odd=("big.png", "loop.png"))
    _write_big(data / "images" / "big.png")
    _symlink_loop(data / "images" / "loop.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)  # num_workers=0: read in this process
    manifest = extract(data, "circle", out=tmp_path / "s", model=adapter, mode="teacher", layers=["norm"],
                       batch_size=4, num_workers=0, progress=False)
    counts = manifest["counts"]
    assert counts["scanned"] == 6 and counts["skipped_images"] == 2 and counts["kept"] == 4
    _, meta = load_features(tmp_path / "s", "norm")
    assert sorted(os.path.basename(m["image"]) for m in meta) == ["0.png", "1.png", "2.png", "3.png"]


def test_strict_extraction_stops_on_a_symlink_loop_with_one_line(tmp_path, monkeypatch, capsys, adapter):
    from mmconcepts.models import loading

    data = _dataset(tmp_path / "data", odd=("loop.png",))
    _symlink_loop(data / "images" / "loop.png")
    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: adapter)  # the module's model, loaded once
    args = ["extract", "--data", str(data), "--token", "circle", "--mode", "teacher", "--num-workers", "0",
            "--quiet", "--out"]
    assert main([*args, str(tmp_path / "strict"), "--strict"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "loop.png" in line and os.strerror(errno.ELOOP) in line
    assert not (tmp_path / "strict").exists()
    assert main([*args, str(tmp_path / "s")]) == 0
    counts = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert counts["skipped_images"] == 1 and counts["kept"] == 4


# --- explain / steer / report -------------------------------------------------------------------------------

def test_explain_and_steer_on_a_too_large_image_exit_2_with_one_line(tmp_path, monkeypatch, capsys, concepts):
    big = _write_big(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)
    for command in (["explain", "--concepts", str(concepts), "--image", str(big)],
                    ["steer", "--concepts", str(concepts), "--concept", "0", "--image", str(big)]):
        assert main(command) == 2, command[0]
        line = _one_error_line(capsys.readouterr().err)
        assert "big.png" in line and "DecompressionBombError" in line, line


def test_the_report_leaves_out_a_too_large_or_looping_image(tmp_path, monkeypatch):
    from mmconcepts.report.concept_maps import attach_maps
    from mmconcepts.report.plots import thumbnail

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)
    big, loop = _write_big(tmp_path / "big.png"), _symlink_loop(tmp_path / "loop.png")
    for path in (big, loop):
        assert thumbnail(path, 96)["missing"]
    cards = [{"index": 0, "images": [{"path": str(big)}, {"path": str(loop)}]}]
    grid = {"grid": [[1.0]], "box": [0, 0, 10, 10]}
    raw = {"method": "attribution", "concepts": [{"index": 0, "images": [{"image": str(big), **grid},
                                                                         {"image": str(loop), **grid}]}]}
    assert attach_maps(cards, [], raw, tmp_path) == "attribution"
    assert "maps" not in cards[0]  # neither image could be drawn: the card keeps its thumbnails only
