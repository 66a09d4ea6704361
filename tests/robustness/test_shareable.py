"""A concepts folder copied alone to another machine keeps working: ``explain`` and ``report`` run without the
dataset and the feature store, warn (one line) which top images are missing and where they were looked for,
and ``learn --copy-images`` carries thumbnails that both fall back to. A small ShapesWorld run of the shipped
captioner (24 training images, 3 Semi-NMF concepts)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.concepts.settings import GroundingSettings


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Machine A learns two concepts folders (one with --copy-images); machine B receives copies of the two
    folders alone and one image to explain; then machine A's dataset, store and folders are gone."""
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_metadata
    from mmconcepts.explanations import explain
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("shareable")
    a, b = root / "a", root / "b"
    write_dataset(a / "train", n=24, seed=5, split="train")
    adapter = load_model(None, device="cpu")
    extract(a / "train", "circle", out=a / "features", model=adapter, layers=["norm"], batch_size=24,
            max_new_tokens=16, progress=False)
    codes = {name: main(["learn", "--features", str(a / "features"), "--layer", "norm", "-k", "3", "--out",
                         str(a / name), *extra])
             for name, extra in (("concepts", []), ("carried", ["--copy-images"]))}
    b.mkdir()
    photo = shutil.copy(load_metadata(a / "features")[0]["image"], b / "photo.png")
    originals = None  # the images explain shows on machine A, where the dataset is
    if codes["carried"] == 0:
        originals = [p for c in explain(a / "carried", photo, model=adapter)["concepts"] for p in c["images"]]
    for name in ("concepts", "carried"):
        if (a / name).is_dir():
            shutil.copytree(a / name, b / name)
    shutil.rmtree(a)
    return {"a": a, "b": b, "photo": photo, "originals": originals, "codes": codes}


def _warning(err: str) -> str:
    """The one warning line of stderr (and nothing else there: no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "Traceback" not in err, err
    return lines[0]


def _assert_names_the_missing_images(line: str, shared) -> None:
    a, b = shared["a"], shared["b"]
    assert "top images of" in line and str(b / "concepts") in line and "are missing" in line
    # where it looked: the link from the copied folder, and the absolute path the images had when grounded
    assert str(b / "train" / "images") in line and str(a / "train" / "images") in line
    assert "--copy-images" in line


@pytest.mark.slow
def test_explain_a_copied_folder_without_its_dataset_warns(shared, capsys):
    code = main(["explain", "--concepts", str(shared["b"] / "concepts"), "--image", str(shared["photo"])])
    captured = capsys.readouterr()
    assert code == 0 and "concept" in captured.out
    _assert_names_the_missing_images(_warning(captured.err), shared)


@pytest.mark.slow
def test_report_of_a_copied_folder_shows_placeholders_and_warns(shared, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--concepts", str(shared["b"] / "concepts"), "--out", str(out)]) == 0
    _assert_names_the_missing_images(_warning(capsys.readouterr().err), shared)
    assert "(missing: " in out.read_text(encoding="utf-8")  # a placeholder says which file


@pytest.mark.slow
def test_copy_images_carries_thumbnails_that_explain_and_report_fall_back_to(shared, tmp_path, capsys):
    from mmconcepts.report.plots import thumbnail

    assert shared["codes"] == {"concepts": 0, "carried": 0}
    folder = shared["b"] / "carried"
    grounding = json.loads((folder / "grounding.json").read_text(encoding="utf-8"))
    assert grounding["settings"]["copy_images"] is True
    carried = []
    for concept in grounding["concepts"]:
        for im in concept["images"]:
            assert im["thumbnail"].startswith("images/") and im["image_absolute"].endswith(".png")
            with Image.open(folder / im["thumbnail"]) as small:
                assert max(small.size) <= 128
            carried.append(folder / im["thumbnail"])
    # on machine A, with the dataset there, explain showed the originals
    assert shared["originals"] and all(p.startswith(str(shared["a"] / "train" / "images"))
                                       for p in shared["originals"])

    code = main(["explain", "--concepts", str(folder), "--image", str(shared["photo"]), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    shown = [p for c in json.loads(captured.out)["concepts"] for p in c["images"]]
    assert shown and all(p.startswith(str(folder / "images")) for p in shown)

    out = tmp_path / "report.html"
    assert main(["report", "--concepts", str(folder), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""  # nothing missing
    html = out.read_text(encoding="utf-8")
    assert "(missing: " not in html
    assert all(thumbnail(str(p), 192)["src"] in html for p in carried)  # the carried thumbnails, embedded


def test_copy_images_is_a_validated_grounding_setting():
    assert GroundingSettings().copy_images is False
    settings = GroundingSettings(copy_images=True)
    assert GroundingSettings.from_json({"settings": settings.to_json()}).copy_images is True
    with pytest.raises(MMConceptsError, match="copy_images"):
        GroundingSettings(copy_images="yes")
