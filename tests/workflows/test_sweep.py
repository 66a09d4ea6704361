import json

import pytest

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.workflows.sweep import sweep
from mmconcepts.files import FORMAT_VERSION


def test_sweep_is_learn_ground_evaluate_at_every_layer(tiny_pipeline, minilm_dir, tmp_path):
    from mmconcepts.decompose import learn
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.concepts import ground

    result = sweep(tiny_pipeline["train"], tiny_pipeline["test"], ["norm", "0"], tmp_path / "sweep", n_concepts=3,
                   model=tiny_pipeline["adapter"], bert_model=str(minilm_dir))
    assert result["layers"] == ["0", "norm"]  # ordered by depth
    on_disk = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert on_disk == {"format_version": FORMAT_VERSION, **result}
    # layer 0 by hand: the same learn + ground + evaluate gives the sweep's numbers
    learn(tiny_pipeline["train"], "0", method="semi-nmf", n_concepts=3, out=tmp_path / "c0", seed=0)
    ground(tmp_path / "c0", model=tiny_pipeline["adapter"])
    alone = evaluate(tmp_path / "c0", tiny_pipeline["test"], tmp_path / "e0", methods=("semi-nmf",),
                     baselines=("rnd-words",), bert_model=str(minilm_dir), model=tiny_pipeline["adapter"])
    for metric, values in result["metrics"]["semi-nmf"].items():
        assert values[0] == alone["methods"]["semi-nmf"].get(metric), metric
        assert result["metrics"]["rnd-words"][metric][0] == alone["baselines"]["rnd-words"].get(metric), metric
    kept = json.loads((tmp_path / "sweep" / "layer-norm" / "eval" / "metrics.json").read_text())
    assert [result["metrics"]["semi-nmf"][m][1] for m in result["metrics"]["semi-nmf"]] == \
        [kept["methods"]["semi-nmf"].get(m) for m in result["metrics"]["semi-nmf"]]
    png = (tmp_path / "sweep" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_report_of_a_real_sweep(tiny_pipeline, tmp_path):
    """The report reads what `mmconcepts sweep` writes (no hand-made sweep.json): the plot has its layers."""
    from mmconcepts.report import build_report
    from mmconcepts.report import evaluation_sections as sections

    sweep(tiny_pipeline["train"], tiny_pipeline["test"], ["0", "norm"], tmp_path / "sweep", n_concepts=3,
          model=tiny_pipeline["adapter"])
    view = sections._sweep(tmp_path / "sweep", "semi-nmf")
    assert view is not None and view["layers"] == ["0", "norm"] and view["png"].startswith("data:image/png;base64,")
    html = build_report(tmp_path / "sweep" / "layer-norm" / "concepts", tmp_path / "sweep",
                        out=tmp_path / "report.html").read_text()
    assert 'id="layers"' in html and view["png"] in html


def test_sweep_unknown_layer(tiny_pipeline, tmp_path, capsys):
    with pytest.raises(MMConceptsError, match="layer '1' is not in"):
        sweep(tiny_pipeline["train"], tiny_pipeline["test"], ["1"], tmp_path / "s", model=tiny_pipeline["adapter"])
    assert not (tmp_path / "s").exists()
    code = main(["sweep", "--features", str(tiny_pipeline["train"]), "--test-features", str(tiny_pipeline["test"]),
                 "--layers", "5", "--out", str(tmp_path / "s")])
    assert code == 2 and "stored layers: 0, norm" in capsys.readouterr().err
