import json

import pytest

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.sweep import sweep
from mmconcepts.files import FORMAT_VERSION


def test_sweep_over_layers(tiny_pipeline, minilm_dir, tmp_path):
    result = sweep(tiny_pipeline["train"], tiny_pipeline["test"], ["norm", "0"], tmp_path / "sweep", n_concepts=3,
                   model=tiny_pipeline["adapter"], bert_model=str(minilm_dir))
    assert result["layers"] == ["0", "norm"]  # ordered by depth
    values = result["metrics"]["semi-nmf"]["bertscore_top1"]
    assert len(values) == 2 and all(-1 <= v <= 1 for v in values)  # F1 rescaled by a baseline may dip below 0
    assert len(result["metrics"]["rnd-words"]["overlap"]) == 2
    on_disk = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert on_disk == {"format_version": FORMAT_VERSION, **result}
    png = (tmp_path / "sweep" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    for layer in ("0", "norm"):
        assert (tmp_path / "sweep" / f"layer-{layer}" / "eval" / "metrics.json").exists()


def test_sweep_unknown_layer(tiny_pipeline, tmp_path, capsys):
    with pytest.raises(MMConceptsError, match="layer '1' is not in"):
        sweep(tiny_pipeline["train"], tiny_pipeline["test"], ["1"], tmp_path / "s", model=tiny_pipeline["adapter"])
    assert not (tmp_path / "s").exists()
    code = main(["sweep", "--features", str(tiny_pipeline["train"]), "--test-features", str(tiny_pipeline["test"]),
                 "--layers", "5", "--out", str(tmp_path / "s")])
    assert code == 2 and "stored layers: 0, norm" in capsys.readouterr().err
