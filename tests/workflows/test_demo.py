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
    assert set(metrics["baselines"]) == {"rnd-words", "noise-imgs", "gt-captions", "centred-direction",
                                          "random-direction", "diffmean"}
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
    # the causal evaluation ran: the concepts steer the captions far more often than random directions do
    assert {"steering_success", "ablation_success", "specificity", "fluency"} <= set(semi)
    assert "steering_success" not in methods["pca"]  # the demo steers with its Semi-NMF concepts only
    assert semi["steering_success"] >= 0.3 >= 0.1 >= base["random-direction"]["steering_success"]
    assert base["diffmean"]["steering_success"] >= 0.5 and semi["fluency"] >= 0.8
    causal = json.loads((out / "eval" / "causal.json").read_text())["methods"]["semi-nmf"]
    assert set(causal) == {"concept", "centred", "random", "diffmean"} and causal["concept"]["n_images"] == 30
    assert causal["concept"]["examples"] and all((out / "eval" / e["image"]).is_file()
                                                 for e in causal["concept"]["examples"])
    # the attribution maps of the top-1 concepts point at the circle far more often than a random patch does
    maps = metrics["heatmaps"]
    assert maps["methods"]["attribution"]["pointing_game"] >= 0.6 >= maps["baselines"]["random-patch"]["pointing_game"]
    html = (out / "report.html").read_text()
    assert 'id="steering"' in html and html.count('class="card steer-card"') == causal["concept"]["n_concepts"]
    assert "<html" in html and "circle" in html and "data:image/png;base64" in html
    assert (out / "concepts" / "dictionary.safetensors").is_file()
    # a second run refuses to overwrite without --overwrite
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
