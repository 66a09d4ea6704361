"""Grounding on the tiny LLaVA pipeline (teacher-mode features of 'dog')."""

import json

import pytest

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import load_features
from mmconcepts.concepts import load_concepts
from mmconcepts.concepts.ground import grounder_for
from mmconcepts.concepts.decoding import typical_strengths
from mmconcepts.concepts.vocabulary import is_valid_word


def test_grounding_json(tiny_pipeline):
    concepts = load_concepts(tiny_pipeline["concepts"], require_grounding=True)
    grounding = concepts.grounding
    assert grounding["decode"] == "effect" and grounding["vocabulary"] == "all"
    assert grounding["exclude"] == ["dog"]  # the token of interest is not one of its concepts' words
    assert len(grounding["concepts"]) == 4
    Z, meta = load_features(tiny_pipeline["train"], "norm")
    # ground() reads the mean feature shard by shard; the same words as grounding from the loaded features
    grounder = grounder_for(concepts, tiny_pipeline["adapter"])  # the settings grounding.json recorded
    words = [concepts.words(k) for k in range(concepts.n_concepts)]
    again = grounder(concepts.directions, base=Z.mean(dim=0), strengths=typical_strengths(concepts.activations))
    assert any(words) and [[w["word"] for w in ws] for ws in again] == words
    for k, concept in enumerate(grounding["concepts"]):
        assert len(concept["words"]) <= 10  # a random tiny model may decode no real word in its top 50
        assert all(is_valid_word(w["word"]) and w["word"] != "dog" for w in concept["words"])
        assert all(w["score"] > 0 for w in concept["words"])  # only words the concept makes likelier
        scores = [w["score"] for w in concept["words"]]
        assert scores == sorted(scores, reverse=True)
        # visual grounding: the 5 most activating training samples, best first
        column = concepts.activations[:, k]
        best = column.topk(5).indices.tolist()
        assert [im["image"] for im in concept["images"]] == [meta[i]["image"] for i in best]
        assert concept["images"][0]["activation"] == pytest.approx(float(column.max()), abs=1e-4)


def test_learn_cli_grounds_the_dictionary(tiny_pipeline, tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "concepts"
    code = main(["learn", "--features", str(tiny_pipeline["train"]), "--layer", "norm", "--n-concepts", "3",
                 "--out", str(out), "--model", str(tiny_model_dirs["llava"]), "--decode", "paper",
                 "--vocabulary", "all"])
    assert code == 0 and "concept   0:" in capsys.readouterr().out
    grounding = json.loads((out / "grounding.json").read_text())
    assert grounding["decode"] == "paper" and grounding["vocabulary"] == "all" and len(grounding["concepts"]) == 3
    assert main(["learn", "--features", str(tiny_pipeline["train"]), "--layer", "norm", "--n-concepts", "3",
                 "--out", str(tmp_path / "bare"), "--no-ground"]) == 0
    assert not (tmp_path / "bare" / "grounding.json").exists()
    with pytest.raises(MMConceptsError, match="no grounding.json"):
        load_concepts(tmp_path / "bare", require_grounding=True)
