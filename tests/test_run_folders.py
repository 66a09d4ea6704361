"""The run record a store keeps, later stages that follow it, and run folders that can be moved."""

import json
import shutil

import pytest

from mmconcepts.cli import main
from mmconcepts.files import FORMAT_VERSION, link, resolve
from mmconcepts.models import ModelOptions


def test_link_is_relative_side_by_side_and_absolute_across_the_root(tmp_path):
    assert link(tmp_path / "run" / "features", tmp_path / "run" / "concepts") == "../features"
    assert resolve("../features", tmp_path / "moved" / "concepts") == tmp_path / "moved" / "features"
    assert link("/usr/share", tmp_path) == "/usr/share"  # nothing in common but the root
    assert resolve("/usr/share", tmp_path / "x") == type(tmp_path)("/usr/share")


def test_model_options_follow_the_run_record_unless_told_otherwise():
    record = {"model_options": {"model": "org/m", "revision": "main", "commit": "c0ffee", "model_dtype": "bfloat16",
                                "device_map": "auto", "trust_remote_code": True}}
    followed = ModelOptions().following(record)
    assert (followed.model, followed.revision, followed.model_dtype, followed.device_map,
            followed.trust_remote_code) == ("org/m", "c0ffee", "bfloat16", "auto", True)
    told = ModelOptions(model_dtype="float32", device="cpu", revision="v2").following(record)
    assert (told.model_dtype, told.device, told.revision, told.device_map) == ("float32", "cpu", "v2", "auto")
    other = ModelOptions(model="org/other").following(record)  # another model: nothing of the first one's
    assert (other.revision, other.device_map, other.trust_remote_code, other.model_dtype) == \
        (None, None, False, "bfloat16")
    with pytest.raises(Exception, match="unknown model dtype"):
        ModelOptions(model_dtype="int8")


TEMPLATE = "USER: {image}\n{instruction} ASSISTANT:"


def test_the_manifest_records_every_setting(tiny_llava_dir, tmp_path):
    from tests.fixtures.datasets import write_images_dataset

    data = write_images_dataset(tmp_path / "data", n=5)
    assert main(["extract", "--model", str(tiny_llava_dir), "--model-dtype", "bfloat16", "--device", "cpu",
                 "--data", str(data), "--token", "dog", "--also", "dogs,puppy", "--mode", "teacher", "--keep",
                 "generated", "--limit", "4", "--layers", "0,-1", "--instruction", "What is in the image?",
                 "--max-new-tokens", "7", "--dtype", "bfloat16", "--out", str(tmp_path / "s"), "--quiet",
                 "--prompt-template", TEMPLATE]) == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION and m["complete"]
    assert m["model_options"] | {"device": None} == {"model": str(tiny_llava_dir), "revision": None, "commit": None,
                                                      "model_dtype": "bfloat16", "device_map": None,
                                                      "device": None, "trust_remote_code": False,
                                                      "prompt_template": TEMPLATE}
    assert m["prompt"] == "USER: <image>\nWhat is in the image? ASSISTANT:"
    assert ModelOptions(device="cpu").following(m).prompt_template == TEMPLATE  # later stages prompt the same way
    assert (m["token"], m["also"], m["mode"], m["keep"], m["limit"], m["split"], m["layers"], m["dtype"]) == \
        ("dog", ["dogs", "puppy"], "teacher", "generated", 4, None, ["0", "2"], "bfloat16")
    assert m["instruction"] == "What is in the image?" and "What is in the image?" in m["prompt"]
    assert (m["max_new_tokens"], m["min_new_tokens"]) == (7, 0)
    assert m["data"]["kind"] == "jsonl" and m["data"]["fingerprint"].startswith("sha256:")
    assert resolve(m["data"]["source"], tmp_path / "s") == (data / "captions.jsonl").resolve()
    rows = [json.loads(line) for line in (tmp_path / "s" / "metadata.jsonl").read_text().splitlines()]
    assert rows[0]["image"] == "images/0.png"  # relative to the dataset's root


def test_later_stages_load_the_model_as_the_store_was_made(tiny_llava_dir, tmp_path, monkeypatch):
    """learn's grounding reads the head, explain runs the model: both in the store's dtype, unless told."""
    from mmconcepts.models import head, loading
    from tests.fixtures.datasets import write_images_dataset

    data = write_images_dataset(tmp_path / "data", n=8)
    assert main(["extract", "--model", str(tiny_llava_dir), "--model-dtype", "bfloat16", "--data", str(data),
                 "--token", "dog", "--mode", "teacher", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    calls = []
    real_head, real_model = head.load_head, loading.load_model
    monkeypatch.setattr(head, "load_head", lambda m, **kw: calls.append(("head", m, kw["dtype"])) or
                        real_head(m, **kw))
    monkeypatch.setattr(loading, "load_model", lambda m, **kw: calls.append(("model", m, kw["dtype"])) or
                        real_model(m, **kw))
    assert main(["learn", "--features", str(tmp_path / "s"), "-k", "3", "--out", str(tmp_path / "c")]) == 0
    image = str(data / "images" / "1.png")
    assert main(["explain", "--concepts", str(tmp_path / "c"), "--image", image, "--mode", "teacher",
                 "--caption", "a dog", "--json"]) == 0
    assert main(["explain", "--concepts", str(tmp_path / "c"), "--image", image, "--mode", "teacher",
                 "--caption", "a dog", "--model-dtype", "float32"]) == 0
    assert calls == [("head", str(tiny_llava_dir), "bfloat16"), ("model", str(tiny_llava_dir), "bfloat16"),
                     ("model", str(tiny_llava_dir), "float32")]


@pytest.mark.slow
def test_a_moved_run_folder_still_explains_evaluates_and_reports(tiny_pipeline, tmp_path, capsys):
    first = tmp_path / "first"
    shutil.copytree(tiny_pipeline["root"], first)
    assert main(["evaluate", "--concepts", str(first / "concepts"), "--test-features", str(first / "features-test"),
                 "--out", str(first / "eval"), "--baselines", "rnd-words", "--methods", "semi-nmf"]) == 0
    capsys.readouterr()
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert not first.exists()
    image = str(moved / "test" / "images" / "3.png")
    assert main(["explain", "--concepts", str(moved / "concepts"), "--image", image, "--mode", "teacher",
                 "--caption", "a dog on the grass", "--json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["token_found"] and all(p.startswith(str(moved)) for c in explained["concepts"]
                                            for p in c["images"])
    assert main(["evaluate", "--concepts", str(moved / "concepts"), "--test-features", str(moved / "features-test"),
                 "--out", str(moved / "eval2"), "--baselines", "rnd-words"]) == 0
    for eval_dir in ("eval", "eval2"):
        assert main(["report", "--concepts", str(moved / "concepts"), "--eval", str(moved / eval_dir),
                     "--out", str(moved / f"{eval_dir}.html")]) == 0
        html = (moved / f"{eval_dir}.html").read_text()
        assert html.count("data:image/png;base64,") >= 8  # the concepts' and explanations' images were found
        assert f"<dd>{moved / 'train' / 'captions.jsonl'}</dd>" in html  # the data, found from the moved store
        assert str(first) not in html
    for file in list(moved.rglob("*.json")) + list(moved.rglob("*.jsonl")):
        text = file.read_text()
        assert str(first) not in text.replace(f'_absolute": "{first}', ""), file  # only the fallbacks name it
