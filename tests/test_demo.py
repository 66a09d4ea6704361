"""The demo end to end on the shipped model, at a reduced size."""

import json

import pytest

from mmconcepts.cli import main


@pytest.mark.slow
def test_demo_writes_report_metrics_and_dictionary(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-train", "600", "--n-test", "150", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "semi-nmf" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["token"] == "circle" and metrics["n_concepts"] == 20
    assert set(metrics["methods"]) == {"semi-nmf", "pca", "kmeans", "simple"}
    assert set(metrics["baselines"]) == {"rnd-words", "noise-imgs", "gt-captions"}
    for row in metrics["methods"].values():
        assert {"grounding_precision_top1", "coverage", "overlap"} <= set(row)
    assert {"shape", "colour", "size", "position", "exact"} <= set(metrics["caption_accuracy"])
    # the shipped captioner's concepts read as words that are true of the images they explain
    # (about 0.98 at this size; random words from its 2,048-word vocabulary are almost never true)
    semi, methods, base = metrics["methods"]["semi-nmf"], metrics["methods"], metrics["baselines"]
    assert semi["grounding_precision_top1"] >= 0.85 and base["rnd-words"]["grounding_precision_top1"] <= 0.1
    assert semi["grounding_precision_top1"] >= methods["simple"]["grounding_precision_top1"] + 0.2
    assert semi["overlap"] <= 0.15 and semi["overlap"] < methods["simple"]["overlap"]
    assert semi["coverage"] >= 0.6
    html = (out / "report.html").read_text()
    assert "<html" in html and "circle" in html and "data:image/png;base64" in html
    assert (out / "concepts" / "dictionary.safetensors").is_file()
    # a second run refuses to overwrite without --overwrite
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
