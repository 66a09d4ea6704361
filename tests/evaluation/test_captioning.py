import pytest

from mmconcepts.cli import main
from mmconcepts.data.shapesworld import write_dataset
from mmconcepts.evaluation.captioning import caption_accuracy

TRUTH = {"objects": [{"shape": "star", "colour": "red", "size": "small", "position": "left"},
                     {"shape": "circle", "colour": "blue", "size": "large", "position": "right"}]}


def test_caption_accuracy_by_hand():
    result = caption_accuracy(
        ["a little red star on the left and one big blue circle on the right",  # all right
         "a small red square on the left and a large blue circle at the top",  # shape 1 and position 2 wrong
         "on the left a small red star"],  # second object missing
        [TRUTH, TRUTH, TRUTH])
    # 6 objects: shape right 4/6, colour 5/6, size 5/6, position 4/6; one exact caption of three
    assert result["shape"] == pytest.approx(4 / 6) and result["colour"] == pytest.approx(5 / 6)
    assert result["size"] == pytest.approx(5 / 6) and result["position"] == pytest.approx(4 / 6)
    assert result["exact"] == pytest.approx(1 / 3) and result["n_images"] == 3
    extra = caption_accuracy(["a little red star on the left and one big blue circle on the right and a red star"],
                             [TRUTH])
    assert extra["exact"] == 0.0 and extra["shape"] == 1.0  # an extra object is not exact


def test_score_captions_cli(tiny_model_dirs, tmp_path, capsys):
    write_dataset(tmp_path / "d", n=3, seed=0, split="test")
    assert main(["score-captions", "--data", str(tmp_path / "d"), "--model", str(tiny_model_dirs["llava"])]) == 0
    out = capsys.readouterr().out
    import json

    result = json.loads(out)
    assert set(result) >= {"shape", "colour", "size", "position", "exact", "n_images"} and result["n_images"] == 3
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "captions.jsonl").write_text('{"image": "x.png", "captions": ["a"]}\n')
    assert main(["score-captions", "--data", str(tmp_path / "plain"), "--model", str(tiny_model_dirs["llava"])]) == 2
    assert "no ShapesWorld attributes" in capsys.readouterr().err
