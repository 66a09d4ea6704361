"""``explain --heatmaps / --heatmap-out`` and ``evaluate --heatmaps`` end to end, on a small ShapesWorld run of
the shipped captioner (32 training and 10 test images, 4 Semi-NMF concepts), and the report built from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mmconcepts.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_metadata
    from mmconcepts.concepts import ground
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("heatmaps")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=32, seed=5, split="train")
    write_dataset(root / "test", n=8, seed=6, split="test")
    for split in ("train", "test"):
        extract(root / split, "circle", out=root / f"features-{split}", model=adapter, layers=["norm"],
                batch_size=32, max_new_tokens=16, progress=False)
    learn(root / "features-train", "norm", method="semi-nmf", n_concepts=4, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    return {"root": root, "meta": load_metadata(root / "features-test", "circle")}


@pytest.fixture(scope="module")
def evaluated(run):
    root = run["root"]
    code = main(["evaluate", "--concepts", str(root / "concepts"), "--test-features", str(root / "features-test"),
                 "--out", str(root / "eval"), "--methods", "semi-nmf", "--baselines", "",
                 "--heatmaps", "attribution,projection"])
    assert code == 0
    return root / "eval"


def test_explain_heatmaps_json(run, capsys):
    image = run["meta"][0]["image"]
    assert main(["explain", "--concepts", str(run["root"] / "concepts"), "--image", image, "--heatmaps",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["token_found"] and result["concepts"]
    for c in result["concepts"]:
        heat = c["heatmap"]
        assert heat["method"] == "attribution" and heat["box"] == [0, 0, 64, 64]
        assert np.asarray(heat["grid"]).shape == (8, 8) and np.isfinite(heat["grid"]).all()


def test_explain_heatmap_out_writes_one_png_per_concept(run, tmp_path, capsys):
    image = run["meta"][0]["image"]
    out = tmp_path / "maps"
    assert main(["explain", "--concepts", str(run["root"] / "concepts"), "--image", image, "--heatmap-out",
                 str(out), "--heatmaps", "projection"]) == 0
    text = capsys.readouterr().out
    assert "map (projection): peak at x=" in text
    files = sorted(out.iterdir())
    concepts = [int(line.split()[1]) for line in text.splitlines() if line.startswith("concept")]
    assert [f.name for f in files] == sorted(f"{run['meta'][0]['id']}-concept-{k}.png" for k in concepts)
    assert all(Image.open(f).size == (256, 256) for f in files)


def test_explain_bad_image_with_heatmaps_is_one_line(run, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = tmp_path / "maps"
    code = main(["explain", "--concepts", str(run["root"] / "concepts"), "--image", str(bad), "--heatmap-out",
                 str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and not out.exists()
    assert main(["explain", "--concepts", str(run["root"] / "concepts"), "--image", str(bad), "--heatmaps",
                 "saliency"]) == 2
    assert "invalid choice: 'saliency'" in capsys.readouterr().err


def test_evaluate_heatmaps_metrics(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    heat = metrics["heatmaps"]
    assert heat["concept"] == "top-1" and heat["ground_truth"] and heat["grid"] == [8, 8]
    assert heat["n_images"] + heat["n_skipped"] <= 8 and heat["n_images"] > 0
    assert set(heat["methods"]) == {"attribution", "projection"} and heat["shown"] == "attribution"
    assert list(heat["baselines"]) == ["centre", "random-patch", "object-mask"]
    for row in [*heat["methods"].values(), *heat["baselines"].values()]:
        assert 0.0 <= row["pointing_game"] <= 1.0 and 0.0 <= row["energy_inside"] <= 1.0
    assert heat["baselines"]["object-mask"]["pointing_game"] == 1.0  # the ideal map always points right
    assert metrics["settings"]["heatmaps"] == ["attribution", "projection"]
    md = (evaluated / "metrics.md").read_text()
    assert "## Concept maps: top-1 concept of" in md and "| random-patch |" in md


def test_evaluate_writes_the_report_maps(evaluated):
    maps = json.loads((evaluated / "maps.json").read_text())
    assert maps["method"] == "attribution" and len(maps["concepts"]) == 4
    entries = [im for c in maps["concepts"] for im in c["images"]]
    assert entries and all(not im["image"].startswith("/") for im in entries)  # relative to the folder
    assert all((evaluated / im["image"]).resolve().is_file() for im in entries)
    assert maps["explanations"] and all(len(e["concepts"]) <= 3 for e in maps["explanations"])


def test_report_shows_the_maps(run, evaluated, tmp_path):
    from mmconcepts.report import build_report

    html = build_report(run["root"] / "concepts", evaluated, out=tmp_path / "report.html").read_text()
    assert html.count('class="thumbs maps"') == sum(1 for c in json.loads((evaluated / "maps.json").read_text())
                                                    ["concepts"] if c["images"])
    assert 'img class="map"' in html


def test_evaluate_bad_heatmap_method_writes_nothing(run, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--concepts", str(run["root"] / "concepts"), "--test-features",
                 str(run["root"] / "features-test"), "--out", str(out), "--heatmaps", "gradcam"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown heatmap method 'gradcam'" in err and err.count("\n") == 1
    assert not out.exists()


def test_evaluate_bare_heatmaps_flag_means_every_method():
    from mmconcepts.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--concepts", "c", "--test-features", "t", "--out", "o",
                                      "--heatmaps"])
    assert tuple(args.heatmaps) == ("attribution", "occlusion", "projection")
    args = build_parser().parse_args(["evaluate", "--concepts", "c", "--test-features", "t", "--out", "o"])
    assert tuple(args.heatmaps) == ()


def test_evaluate_heatmaps_without_ground_truth_keeps_the_report_maps(tiny_pipeline, tmp_path):
    """Data without ShapesWorld records (the tiny pipeline, teacher mode): no scores, the maps still made."""
    from mmconcepts.evaluation.evaluate import evaluate

    out = tmp_path / "eval"
    metrics = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], out, model=tiny_pipeline["adapter"],
                       methods=("semi-nmf",), baselines=(), heatmaps=("attribution",))
    heat = metrics["heatmaps"]
    assert heat["ground_truth"] is False and heat["methods"] == {} and heat["baselines"] == {}
    maps = json.loads((out / "maps.json").read_text())
    assert any(c["images"] for c in maps["concepts"]) and maps["explanations"]
    assert all(np.asarray(im["grid"]).shape == (4, 4) for c in maps["concepts"] for im in c["images"])
    assert "Concept maps" not in (out / "metrics.md").read_text()
