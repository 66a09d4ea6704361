"""``mmconcepts export --format neuronpedia``: the rows parse, one feature per concept with the grounding's words,
the activations are the top images with their values and reference images that exist, and the extension gives
each activation's region (and map with --maps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_helpers import shapes_run
from PIL import Image

from mmconcepts.cli import main
from mmconcepts.concepts import load_concepts
from mmconcepts.files import resolve


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shapes_run(tmp_path_factory)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _export(concepts, out, *extra) -> None:
    assert main(["export", "--concepts", str(concepts), "--format", "neuronpedia", "--out", str(out), *extra]) == 0


@pytest.mark.parametrize("method", ["semi-nmf", "pca"])
def test_rows_are_the_concepts_words_and_top_images(run, tmp_path, method, capsys):
    out = tmp_path / "np"
    _export(run[method], out)
    assert "features" in capsys.readouterr().out
    concepts = load_concepts(run[method])
    K = concepts.n_concepts
    assert K == (8 if method == "pca" else 4)
    (source,) = _rows(out / "source.jsonl")
    (model,) = _rows(out / "model.jsonl")
    (source_set,) = _rows(out / "sourceset.jsonl")
    assert source["modelId"] == model["id"] == source_set["modelId"] and source["setName"] == source_set["name"]
    features = _rows(out / "features" / "batch-0.jsonl")
    assert [f["index"] for f in features] == [str(k) for k in range(K)]
    assert all(f["layer"] == source["id"] and f["modelId"] == model["id"] for f in features)
    assert [f["pos_str"] for f in features] == [concepts.words(k) for k in range(K)]
    explanations = _rows(out / "explanations" / "batch-0.jsonl")
    assert {e["index"]: e["description"] for e in explanations} == \
        {str(k): ", ".join(concepts.words(k)) for k in range(K) if concepts.words(k)}
    activations = _rows(out / "activations" / "batch-0.jsonl")
    assert len({a["id"] for a in activations}) == len(activations) == sum(len(concepts.images(k)) for k in range(K))
    for k in range(K):
        mine = [a for a in activations if a["index"] == str(k)]
        assert [a["maxValue"] for a in mine] == [im["activation"] for im in concepts.images(k)]
        assert [a["dataIndex"] for a in mine] == [im["id"] for im in concepts.images(k)]
        assert features[k]["maxActApprox"] == pytest.approx(float(concepts.activations[:, k].max()), abs=1e-5)
    for a in activations:
        assert max(a["values"]) == a["values"][a["maxValueTokenIndex"]] == pytest.approx(max(a["maxValue"], 0))
        assert a["tokens"][a["maxValueTokenIndex"]] == "circle" and len(a["tokens"]) == len(a["values"])
        image = out / a["dataSource"]
        assert not Path(a["dataSource"]).is_absolute() and image.is_file() and Image.open(image).size == (64, 64)
    extension = _rows(out / "mmconcepts" / "activations.jsonl")
    assert [e["id"] for e in extension] == [a["id"] for a in activations]
    for e in extension:
        x0, y0, x1, y1 = e["region"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and e["map"] is None


def test_linked_images_and_maps(run, tmp_path):
    out = tmp_path / "np"
    _export(run["semi-nmf"], out, "--no-copy-images", "--maps", "projection", "--n-images", "2")
    concepts = load_concepts(run["semi-nmf"])
    assert not (out / "images").exists()
    activations = _rows(out / "activations" / "batch-0.jsonl")
    assert len(activations) == 2 * concepts.n_concepts
    originals = {str(Path(m["image"]).resolve()) for m in concepts.train_meta()}
    for a in activations:
        assert str(resolve(a["dataSource"], out)) in originals
    extension = _rows(out / "mmconcepts" / "activations.jsonl")
    for e in extension:
        assert e["map"]["method"] == "projection" and e["map"]["box"] == [0, 0, 64, 64]
        assert len(e["map"]["grid"]) == 8 and all(len(row) == 8 for row in e["map"]["grid"])


def test_ungrounded_folder_is_refused_in_one_line(run, tmp_path, capsys):
    out = tmp_path / "np"
    assert main(["export", "--concepts", str(run["topk-sae"]), "--format", "neuronpedia", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "grounding.json" in err and not out.exists()
