import json

import pytest
from PIL import Image

from mmconcepts.data import ImageLoadError, load_image, open_dataset
from mmconcepts.errors import MMConceptsError


def _images(root):
    (root / "imgs").mkdir(parents=True)
    Image.new("L", (40, 30), 128).save(root / "imgs" / "grey.png")
    Image.new("RGBA", (20, 50), (255, 0, 0, 0)).save(root / "imgs" / "rgba.png")
    Image.new("RGB", (33, 17), (0, 0, 255)).save(root / "imgs" / "odd.jpg")


def test_karpathy_json_with_grey_and_rgba(tmp_path):
    _images(tmp_path / "coco")
    data = {"images": [
        {"filepath": "imgs", "filename": "grey.png", "split": "test", "cocoid": 1,
         "sentences": [{"raw": "A grey dog.", "tokens": ["a", "grey", "dog"]}, {"tokens": ["a", "dog"]}]},
        {"filepath": "imgs", "filename": "rgba.png", "split": "train", "cocoid": 2, "sentences": [{"raw": "x"}]},
        {"filepath": "imgs", "filename": "odd.jpg", "split": "test", "cocoid": 3, "sentences": []},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    ds = open_dataset(path, image_root=tmp_path / "coco", split="test")
    assert [s.id for s in ds] == ["1", "3"]
    assert ds[0].captions == ["A grey dog.", "a dog"]
    assert ds[0].load().mode == "RGB" and ds[0].load().size == (40, 30)
    rgba = open_dataset(path, image_root=tmp_path / "coco", split="train")[0].load()
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (255, 255, 255)  # transparent over white


def test_jsonl_and_csv(tmp_path):
    _images(tmp_path)
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"image": "imgs/odd.jpg", "captions": ["a blue thing"]}) + "\n\n"
        + json.dumps({"image": "imgs/grey.png", "caption": "grey"}) + "\n")
    ds = open_dataset(tmp_path)
    assert ds.kind == "jsonl" and [s.captions for s in ds] == [["a blue thing"], ["grey"]]
    other = tmp_path / "csvset"
    _images(other)
    (other / "captions.csv").write_text("image,caption\nimgs/odd.jpg,one\nimgs/odd.jpg,two\nimgs/grey.png,three\n")
    ds = open_dataset(other, limit=1)
    assert ds.kind == "csv" and ds[0].captions == ["one", "two"] and len(ds) == 1


@pytest.mark.parametrize("content, message", [
    ('{"image": "a.png"}\n{not json}\n', ":2: not valid JSON"),
    ('{"captions": ["x"]}\n', ":1: missing field 'image'"),
    ('{"image": "../outside.png", "captions": []}\n', "escapes the dataset root"),
    ('{"image": "a.png", "captions": 3}\n', "'captions' must be"),
])
def test_malformed_jsonl_names_the_line(tmp_path, content, message):
    (tmp_path / "captions.jsonl").write_text(content)
    with pytest.raises(MMConceptsError, match=message):
        open_dataset(tmp_path)


def test_malformed_karpathy_and_csv(tmp_path):
    (tmp_path / "k.json").write_text('{"images": [{"filepath": "x"}]}')
    with pytest.raises(MMConceptsError, match=r"images\[0\]: missing field 'filename'"):
        open_dataset(tmp_path / "k.json")
    (tmp_path / "bad.json").write_text('{"images": ')
    with pytest.raises(MMConceptsError, match="not valid JSON"):
        open_dataset(tmp_path / "bad.json")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "captions.csv").write_text("path,text\nx,y\n")
    with pytest.raises(MMConceptsError, match="'image' and 'caption'"):
        open_dataset(tmp_path / "c")


def test_missing_dataset_and_captions(tmp_path):
    with pytest.raises(MMConceptsError, match="dataset not found"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(MMConceptsError, match="no captions.jsonl or captions.csv"):
        open_dataset(tmp_path)


def test_missing_and_corrupt_images(tmp_path):
    with pytest.raises(ImageLoadError, match="image not found"):
        load_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageLoadError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
