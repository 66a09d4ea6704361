"""``score-captions``: a captioner's accuracy on a ShapesWorld dataset (the accuracy itself:
tests/data/test_truth.py)."""

from mmconcepts.cli import main
from mmconcepts.data.shapesworld import write_dataset


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
