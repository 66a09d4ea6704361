"""Local explanations on the tiny LLaVA pipeline (teacher-mode features of 'dog')."""

import json

import pytest

from mmconcepts.cli import main
from mmconcepts.concepts import load_concepts
from mmconcepts.errors import MMConceptsError
from mmconcepts.explanations import explain
from mmconcepts.extract import load_features


def test_explain_teacher_mode_matches_the_dictionary(tiny_pipeline):
    root = tiny_pipeline["root"]
    image = root / "test" / "images" / "3.png"
    result = explain(tiny_pipeline["concepts"], image, model=tiny_pipeline["adapter"], mode="teacher",
                     caption="a dog on the grass")
    assert result["token_found"] and len(result["concepts"]) == 3
    activations = [c["activation"] for c in result["concepts"]]
    assert activations == sorted(activations, reverse=True) and min(activations) >= 0
    Z, meta = load_features(tiny_pipeline["test"], "norm")  # the same image and caption in the test store
    row = next(i for i, m in enumerate(meta) if m["image"].endswith("test/images/3.png"))
    concepts = load_concepts(tiny_pipeline["concepts"])
    expected = concepts.dictionary.transform(Z[row:row + 1])[0]
    assert result["concepts"][0]["index"] == int(expected.argmax())
    assert result["concepts"][0]["activation"] == pytest.approx(float(expected.max()), abs=1e-3)
    assert result["concepts"][0]["words"] == concepts.words(result["concepts"][0]["index"])


def test_explain_when_the_token_is_not_generated(tiny_pipeline, tiny_model_dirs, capsys):
    root = tiny_pipeline["root"]
    image = root / "test" / "images" / "0.png"
    result = explain(tiny_pipeline["concepts"], image, model=tiny_pipeline["adapter"])
    assert result["token_found"] is False and result["concepts"] == [] and isinstance(result["caption"], str)
    code = main(["explain", "--concepts", str(tiny_pipeline["concepts"]), "--image", str(image), "--model",
                 str(tiny_model_dirs["llava"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["token_found"] is False
    code = main(["explain", "--concepts", str(tiny_pipeline["concepts"]), "--image", str(image), "--model",
                 str(tiny_model_dirs["llava"])])
    assert code == 1 and "--mode teacher --caption" in capsys.readouterr().out


def test_explain_bad_input(tiny_pipeline, capsys):
    concepts = str(tiny_pipeline["concepts"])
    assert main(["explain", "--concepts", concepts, "--image", "/nonexistent.png"]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(["explain", "--concepts", concepts, "--image", "x.png", "--mode", "teacher"]) == 2
    assert "--caption" in capsys.readouterr().err
    with pytest.raises(MMConceptsError, match="concepts folder not found"):
        explain(tiny_pipeline["root"] / "nope", "x.png")
