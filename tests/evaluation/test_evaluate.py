"""``evaluate`` on the tiny LLaVA pipeline: the metrics.json layout, the baselines, bad input."""

import json
import math

import pytest

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.evaluate import evaluate


def test_metrics_layout_and_baselines(tiny_pipeline, tiny_clip_dir, minilm_dir, tmp_path):
    metrics = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "eval",
                       model=tiny_pipeline["adapter"], clip_model=str(tiny_clip_dir), bert_model=str(minilm_dir),
                       n_noise=24)
    assert set(metrics["methods"]) == {"semi-nmf", "pca", "kmeans", "simple"}
    assert set(metrics["baselines"]) == {"rnd-words", "noise-imgs", "gt-captions"}
    assert metrics["token"] == "dog" and metrics["layer"] == "norm" and metrics["n_test"] == 8
    for name, row in metrics["methods"].items():
        assert {"overlap", "clipscore_top1", "clipscore_top3", "bertscore_top1", "bertscore_top3"} <= set(row)
        assert 0 <= row["overlap"] <= 1 and 0 <= row["clipscore_top1"] <= 2.5
        assert "grounding_precision_top1" not in row and "coverage" not in row  # no attributes: absent
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in row.values())
    assert {"clipscore_top1", "bertscore_top1"} <= set(metrics["baselines"]["gt-captions"])
    assert {"clipscore_top1", "bertscore_top1"} <= set(metrics["baselines"]["rnd-words"])
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["methods"] == metrics["methods"]
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| semi-nmf |" in table and "| rnd-words |" in table
    overlap = json.loads((tmp_path / "eval" / "overlap.json").read_text())
    matrix = overlap["methods"]["semi-nmf"]
    assert len(matrix) == 4 and all(matrix[k][k] in (0.0, 1.0) for k in range(4))  # 0: a concept without words
    explanations = json.loads((tmp_path / "eval" / "explanations.json").read_text())
    assert len(explanations["explanations"]) == 8 and len(explanations["explanations"][0]["concepts"]) == 3


def test_metrics_without_scorers_are_absent(tiny_pipeline, tmp_path):
    metrics = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "eval",
                       model=tiny_pipeline["adapter"], methods=("semi-nmf",), baselines=("gt-captions",))
    assert set(metrics["methods"]["semi-nmf"]) == {"overlap"}
    assert metrics["baselines"]["gt-captions"] == {}


def test_bad_input(tiny_pipeline, tmp_path, capsys):
    with pytest.raises(MMConceptsError, match="unknown method or baseline 'nope'"):
        evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "e1", methods=("nope",))
    import shutil

    for key, value, message in (("token", "cat", "for token 'cat'"), ("model", "other/model", "from model")):
        other = tmp_path / f"store-{key}"
        shutil.copytree(tiny_pipeline["test"], other)
        manifest = json.loads((other / "manifest.json").read_text())
        (other / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(MMConceptsError, match=message):
            evaluate(tiny_pipeline["concepts"], other, tmp_path / "e1")
    # features of another layer than the concepts: the layer is checked
    code = main(["evaluate", "--concepts", str(tiny_pipeline["concepts"]), "--test-features", str(tmp_path / "none"),
                 "--out", str(tmp_path / "e2")])
    assert code == 2 and "no feature store" in capsys.readouterr().err
    code = main(["evaluate", "--concepts", str(tiny_pipeline["concepts"]), "--test-features", str(tiny_pipeline["test"]),
                 "--out", str(tmp_path / "e3"), "--clip-model", str(tmp_path / "no-clip"), "--baselines", ""])
    assert code == 2 and "--clip-model" in capsys.readouterr().err
    for name in ("e1", "e2", "e3"):
        assert not (tmp_path / name).exists()
