"""The demo end to end on the shipped model, at a reduced size."""

import json

from mmconcepts.cli import main


def test_demo_writes_report_metrics_and_dictionary(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-train", "300", "--n-test", "80", "--concepts", "8", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "semi-nmf" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["token"] == "circle" and metrics["n_concepts"] == 8
    assert set(metrics["methods"]) == {"semi-nmf", "pca", "kmeans", "simple"}
    assert set(metrics["baselines"]) == {"rnd-words", "noise-imgs", "gt-captions"}
    for row in metrics["methods"].values():
        assert {"grounding_precision_top1", "coverage", "overlap"} <= set(row)
    assert {"shape", "colour", "size", "position", "exact"} <= set(metrics["caption_accuracy"])
    html = (out / "report.html").read_text()
    assert "<html" in html and "circle" in html and "data:image/png;base64" in html
    assert (out / "concepts" / "dictionary.safetensors").is_file()
    # a second run refuses to overwrite without --overwrite
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
