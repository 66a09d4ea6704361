"""open_dataset on folders written by Hugging Face ``save_to_disk``, and load_image on their reference paths."""

import argparse
import sys

import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")
from datasets import Dataset as HFDataset  # noqa: E402
from datasets import DatasetDict, Features, List, Value  # noqa: E402
from datasets import Image as HFImage  # noqa: E402

from mmconcepts.cli._common import add_data_args  # noqa: E402
from mmconcepts.data import ImageLoadError, load_image, open_dataset  # noqa: E402
from mmconcepts.data import hf  # noqa: E402
from mmconcepts.errors import MMConceptsError  # noqa: E402

datasets.disable_progress_bars()

COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (10, 20, 30)]


def _pictures():
    pictures = [Image.new("RGB", (6 + i, 5), c) for i, c in enumerate(COLOURS)]
    pictures[1].putpixel((0, 0), (1, 2, 3))
    return pictures


def _table(**columns):
    features = {"image": HFImage(), "caption": Value("string")}
    features.update({k: v for k, v in columns.pop("features", {}).items()})
    data = {"image": _pictures(), "caption": ["a red box", "a green box", "a blue box", "a dark box"]}
    data.update(columns)
    for name in columns:  # columns without a given feature get the inferred one
        features.setdefault(name, HFDataset.from_dict({name: columns[name]}).features[name])
    return HFDataset.from_dict(data, features=Features({k: features[k] for k in data}))


def _same(a, b):
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    _table(cocoid=[11, 12, 13, 14], attributes=[{"shape": "box", "n": i} for i in range(4)]).save_to_disk(folder)
    return folder


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dict")
    table = _table()
    DatasetDict({"train": table.select([0, 1, 2]), "test": table.select([3])}).save_to_disk(folder)
    return folder


def test_plain_dataset(plain):
    ds = open_dataset(plain)
    assert ds.kind == "hf" and ds.source == plain and ds.root == plain and len(ds) == 4
    assert [s.id for s in ds] == ["11", "12", "13", "14"]
    assert ds[1].captions == ["a green box"] and ds[1].split is None
    assert ds[2].attributes == {"shape": "box", "n": 2} and ds.has_attributes
    assert ds[0].image == plain.resolve() / "#0"
    for sample, picture in zip(ds, _pictures()):
        assert _same(sample.load(), picture)
        assert _same(load_image(str(sample.image)), picture)  # as read back from metadata


def test_reference_loads_are_cached_and_rgba_goes_over_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    HFDataset.from_dict({"image": [rgba], "text": ["x"]},
                        features=Features({"image": HFImage(), "text": Value("string")})).save_to_disk(tmp_path)
    sample = open_dataset(tmp_path)[0]
    assert sample.captions == ["x"] and sample.id == "0"
    before = hf._load_cached.cache_info().hits
    image = sample.load()
    sample.load()
    assert hf._load_cached.cache_info().hits >= before + 2
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((1, 1)) == (0, 0, 255)


def test_dataset_dict_split(two_splits):
    ds = open_dataset(two_splits, split="test")
    assert len(ds) == 1 and ds[0].split == "test" and ds[0].captions == ["a dark box"] and ds[0].id == "0"
    assert ds[0].image == two_splits.resolve() / "test#0"
    assert _same(ds[0].load(), _pictures()[3])
    train = open_dataset(two_splits, split="train", limit=2)
    assert [s.captions[0] for s in train] == ["a red box", "a green box"]
    assert _same(load_image(train[1].image), _pictures()[1])


def test_dataset_dict_with_one_split_needs_no_split(tmp_path):
    DatasetDict({"validation": _table()}).save_to_disk(tmp_path)
    ds = open_dataset(tmp_path, limit=1)
    assert len(ds) == 1 and ds[0].split == "validation" and ds[0].image.name == "validation#0"


def test_split_column_filters_a_plain_dataset_and_rows_keep_their_index(tmp_path):
    _table(split=["train", "test", None, "test"]).save_to_disk(tmp_path)
    ds = open_dataset(tmp_path, split="test")
    assert [s.id for s in ds] == ["1", "2", "3"] and [s.split for s in ds] == ["test", None, "test"]
    assert [s.image.name for s in ds] == ["#1", "#2", "#3"]
    assert _same(ds[2].load(), _pictures()[3])
    limited = open_dataset(tmp_path, split="train", limit=5)
    assert [s.id for s in limited] == ["0", "2"]
    assert len(open_dataset(tmp_path, limit=2)) == 2


def test_caption_cells(tmp_path):
    sentences = [["one", "two"], [], ["three"], ["four"]]
    _table(sentences=sentences).remove_columns("caption").save_to_disk(tmp_path / "strings")
    assert [s.captions for s in open_dataset(tmp_path / "strings")] == sentences

    raw = [[{"raw": " One. "}, {"raw": "Two."}], [], [{"raw": "x"}], [{"raw": "y"}]]
    _table(sentences=raw, features={"sentences": List({"raw": Value("string")})}).save_to_disk(tmp_path / "raw")
    ds = open_dataset(tmp_path / "raw", caption_column="sentences")
    assert ds[0].captions == ["One.", "Two."] and ds[1].captions == []
    assert open_dataset(tmp_path / "raw")[0].captions == ["a red box"]  # 'caption' comes first by default

    legacy = [{"raw": ["p", "q"]}, {"raw": []}, {"raw": ["r"]}, {"raw": ["s"]}]  # Sequence(dict): dict of lists
    _table(sentences=legacy, features={"sentences": datasets.Sequence({"raw": Value("string")})}) \
        .remove_columns("caption").save_to_disk(tmp_path / "legacy")
    assert open_dataset(tmp_path / "legacy")[0].captions == ["p", "q"]


def test_string_path_images(tmp_path):
    folder, elsewhere = tmp_path / "paths", tmp_path / "pictures"
    (folder / "imgs").mkdir(parents=True)
    elsewhere.mkdir()
    for i, picture in enumerate(_pictures()[:2]):
        picture.save(folder / "imgs" / f"{i}.png")
        picture.save(elsewhere / f"{i}.png")
    HFDataset.from_dict({"file": ["imgs/0.png", "imgs/1.png"], "text": ["a", "b"]}).save_to_disk(folder)
    ds = open_dataset(folder, image_column="file")
    assert ds[1].image == (folder / "imgs" / "1.png").resolve() and _same(ds[1].load(), _pictures()[1])

    (tmp_path / "rooted").mkdir()
    HFDataset.from_dict({"image": ["0.png", "1.png"], "text": ["a", "b"]}).save_to_disk(tmp_path / "rooted")
    ds = open_dataset(tmp_path / "rooted", image_root=elsewhere)
    assert ds[0].image == (elsewhere / "0.png").resolve() and _same(ds[0].load(), _pictures()[0])

    HFDataset.from_dict({"image": ["../pictures/0.png"], "text": ["a"]}).save_to_disk(tmp_path / "escape")
    with pytest.raises(MMConceptsError, match=r"row 0, column 'image': image path '../pictures/0.png' escapes"):
        open_dataset(tmp_path / "escape")


def test_bad_columns(tmp_path, plain):
    with pytest.raises(MMConceptsError, match=r"no image column 'photo' \(columns: image, caption, cocoid, "
                                               r"attributes\); pick one with --image-column") as e:
        open_dataset(plain, image_column="photo")
    _one_line(e)
    with pytest.raises(MMConceptsError, match=r"no caption column 'sentences' .*--caption-column"):
        open_dataset(plain, caption_column="sentences")
    with pytest.raises(MMConceptsError, match=r"column 'cocoid' holds neither images nor path strings.*--image-col"):
        open_dataset(plain, image_column="cocoid")

    _table(label=[1, 2, 3, 4]).remove_columns("caption").save_to_disk(tmp_path / "nocap")
    with pytest.raises(MMConceptsError, match=r"no caption column \(looked for caption, captions, sentences, text; "
                                               r"columns: image, label\); pick one with --caption-column") as e:
        open_dataset(tmp_path / "nocap")
    _one_line(e)
    with pytest.raises(MMConceptsError, match=r"row 0, column 'label': expected a string.*got int; .*--caption-col"):
        open_dataset(tmp_path / "nocap", caption_column="label")

    _table(bad=[[1], [2], [3], [4]]).save_to_disk(tmp_path / "badlist")
    with pytest.raises(MMConceptsError, match=r"row 0, column 'bad': .*got a list of int") as e:
        open_dataset(tmp_path / "badlist", caption_column="bad")
    _one_line(e)


def test_bad_splits(two_splits):
    with pytest.raises(MMConceptsError, match=r"no split 'val'; choose one with --split: train, test") as e:
        open_dataset(two_splits, split="val")
    _one_line(e)
    with pytest.raises(MMConceptsError, match=r"holds several splits; choose one with --split: train, test") as e:
        open_dataset(two_splits)
    _one_line(e)


def test_bad_references(plain, two_splits):
    with pytest.raises(ImageLoadError, match=r"row 9 out of range") as e:
        load_image(plain.resolve() / "#9")
    _one_line(e)
    with pytest.raises(ImageLoadError, match=r"row 1 out of range"):
        load_image(two_splits.resolve() / "test#1")
    with pytest.raises(ImageLoadError, match=r"no split 'val'"):
        load_image(two_splits / "val#0")
    with pytest.raises(ImageLoadError, match="image not found"):  # not an HF folder: a plain missing file
        load_image(plain.parent / "#0")


def test_undecodable_embedded_image(tmp_path):
    HFDataset.from_dict({"image": [{"bytes": b"not a png", "path": None}], "text": ["x"]},
                        features=Features({"image": HFImage(), "text": Value("string")})).save_to_disk(tmp_path)
    sample = open_dataset(tmp_path)[0]
    with pytest.raises(ImageLoadError, match=r"cannot read image .*#0: UnidentifiedImageError") as e:
        sample.load()
    _one_line(e)


def test_not_a_dataset_folder_mentions_hf(tmp_path):
    with pytest.raises(MMConceptsError, match=r"no captions.jsonl or captions.csv .*Hugging Face dataset"):
        open_dataset(tmp_path)


def test_missing_datasets_package(tmp_path, monkeypatch):
    _table().save_to_disk(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MMConceptsError, match=r"pip install datasets") as e:
        open_dataset(tmp_path)
    _one_line(e)
    with pytest.raises(MMConceptsError, match=r"pip install datasets"):
        load_image(tmp_path.resolve() / "#0")


def test_cli_data_args():
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(["--data", "d", "--image-column", "photo", "--caption-column", "sentences"])
    assert (args.image_column, args.caption_column) == ("photo", "sentences")
    args = parser.parse_args(["--data", "d"])
    assert args.image_column is None and args.caption_column is None
