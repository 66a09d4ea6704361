"""The causal evaluation: the metrics on hand-made caption pairs, and a small run on the shipped captioner."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.causal import interventions as C

RED = ("colour", "red")


def test_token_object_fluency_and_what_a_caption_says():
    assert C.steered_has("one red circle on the left", "circle", RED)
    assert not C.steered_has("a square in red and a circle in blue", "circle", RED)
    assert not C.steered_has("a square in red", "circle", RED)  # no circle at all
    # the first circle is the token object
    assert C.steered_has("a circle in red , a circle in blue", "circle", RED)
    assert C.is_fluent("a circle in red , and a square")
    assert not C.is_fluent("red red red")  # a phrase without a shape
    assert not C.is_fluent("")


def test_specificity_by_hand():
    before = "a small circle in red on the left and a big square in blue at the top"
    # only the target attribute changed: the circle's size and position, the square's 4 attributes: 6 / 6
    assert C.specificity(before, "a small circle in green on the left and a big square in blue at the top",
                         "circle", "colour") == 1.0
    # the circle's size changed (1 of its 2 others kept), the square's colour (3 of 4 kept): 4 / 6
    after = "a big circle in green on the left and a big square in red at the top"
    assert math.isclose(C.specificity(before, after, "circle", "colour"), 4 / 6)
    # the square is gone: its 4 attributes count as changed: 2 / 6
    assert math.isclose(C.specificity(before, "a small circle in green on the left", "circle", "colour"), 2 / 6)


def test_concept_scores_by_hand():
    blue = {"shape": "circle", "colour": "blue", "size": "small", "position": "left"}
    red = {**blue, "colour": "red"}
    steer = [(blue, "a circle in blue", "a circle in red"),  # success, specificity 2/2
             (blue, "a circle in blue on the left", "a circle in red on the right"),  # success, position moved: 1/2
             (blue, "a circle in blue", "red red red"),  # no circle any more: failure, not fluent
             (red, "a circle in red", "a circle in red")]  # already red: not a steering case (fluent)
    ablate = [(red, "a circle in red", "a circle in blue"),  # success, 2/2
              (red, "a circle in red", "a circle in red"),  # failure
              (blue, "a circle in blue", "a circle")]  # not red: not an ablation case
    scores = C.concept_scores(steer, ablate, "circle", RED)
    assert math.isclose(scores["steering_success"], 2 / 3)
    assert math.isclose(scores["ablation_success"], 1 / 2)
    assert math.isclose(scores["specificity"], (1 + 0.5 + 1) / 3)
    assert math.isclose(scores["fluency"], 3 / 4)
    assert (scores["n_steer"], scores["n_ablate"]) == (3, 2)
    # nothing to intervene on: the rates are absent, not zero
    empty = C.concept_scores([], [], "circle", RED)
    assert "steering_success" not in empty and "fluency" not in empty


def test_word_scores_without_ground_truth():
    steer = [("a circle in blue", "a circle in red"), ("a circle in blue", "a circle in blue"),
             ("a circle in red", "a circle in red")]  # already says it: not counted
    ablate = [("a circle in red", "a circle"), ("a circle in blue", "a circle in red")]  # second not counted
    scores = C.word_scores(steer, ablate, ["red", "crimson"])
    assert scores["steering_success"] == 0.5 and scores["ablation_success"] == 1.0


def test_format_table_marks_missing_metrics():
    text = C.format_table({"semi-nmf": {"steering_success": 0.5, "fluency": 1.0}})
    assert "| semi-nmf | 0.500 | – | – | 1.000 |" in text


# ---- end to end on the shipped captioner ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_concepts(tmp_path_factory):
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_metadata
    from mmconcepts.files import read_json, write_json
    from mmconcepts.concepts import ground
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("causal")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=32, seed=5, split="train")
    write_dataset(root / "test", n=10, seed=6, split="test")
    for split in ("train", "test"):
        extract(root / split, "circle", out=root / f"features-{split}", model=adapter, layers=["norm"],
                batch_size=32, max_new_tokens=16, progress=False)
    learn(root / "features-train", "norm", method="semi-nmf", n_concepts=4, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    # fix the first words, so that three concepts name an attribute value and one a shape (skipped)
    grounding = read_json(root / "concepts" / "grounding.json", "ground again")
    for k, word in enumerate(("red", "left", "big", "square")):
        grounding["concepts"][k]["words"] = [{"word": word, "score": 1.0}]
    write_json(root / "concepts" / "grounding.json", grounding)
    cs = load_concepts(root / "concepts")
    return {"root": root, "adapter": adapter, "concepts": cs,
            "meta": load_metadata(root / "features-test", "circle")}


def test_causal_evaluation_end_to_end(shapes_concepts):
    cs, meta, adapter = shapes_concepts["concepts"], shapes_concepts["meta"], shapes_concepts["adapter"]
    assert meta and all("attributes" in m for m in meta)
    results = C.causal_evaluation(cs, meta, adapter, n_images=6, seed=0, concept_indices=[0, 2, 3])
    assert set(results) == {"concept", "centred", "random", "diffmean"}
    for direction, scores in results.items():
        assert scores["n_concepts"] == 2 and scores["ground_truth"] and scores["n_images"] <= 6
        assert [c["target"] for c in scores["concepts"]] == [["colour", "red"], ["size", "large"]]
        for metric in C.METRICS:
            if metric in scores:
                assert 0.0 <= scores[metric] <= 1.0
        assert ("ablation_success" in scores) == (direction == "concept")
        assert all({"before", "after", "mode"} <= set(e) for e in scores["examples"])
    # no intervention at all (strength 0): every caption is the one before
    still = C.causal_scores(cs, meta, adapter, direction="random", strength_factor=0.0, n_images=6,
                            concept_indices=[1])
    assert still["examples"] and all(e["before"] == e["after"] for e in still["examples"])
    assert still.get("specificity", 1.0) == 1.0
    assert C.metrics_row(still).keys() <= set(C.METRICS)


def test_causal_scores_without_ground_truth_reads_the_words(shapes_concepts):
    cs, adapter = shapes_concepts["concepts"], shapes_concepts["adapter"]
    meta = [{k: v for k, v in m.items() if k != "attributes"} for m in shapes_concepts["meta"]]
    scores = C.causal_scores(cs, meta, adapter, n_images=4, concept_indices=[3])
    assert scores["ground_truth"] is False and scores["n_concepts"] == 1  # a shape word counts here
    assert "fluency" not in scores and "specificity" not in scores


def test_evaluate_causal_adds_the_rows(shapes_concepts, tmp_path, monkeypatch):
    from mmconcepts.evaluation.evaluate import evaluate

    from mmconcepts.files import read_json

    run = C.causal_evaluation
    monkeypatch.setattr(C, "causal_evaluation", lambda *a, **kw: run(*a, **kw, concept_indices=[0]))

    root = shapes_concepts["root"]
    out = tmp_path / "eval"
    metrics = evaluate(root / "concepts", root / "features-test", out, methods=("semi-nmf",),
                       baselines=(), model=shapes_concepts["adapter"], causal=True, causal_images=4)
    row = metrics["methods"]["semi-nmf"]
    assert "fluency" in row and "overlap" in row
    assert {"centred-direction", "random-direction", "diffmean"} <= set(metrics["baselines"])
    assert "ablation_success" not in metrics["baselines"]["random-direction"]
    assert metrics["settings"]["causal"] is True and metrics["settings"]["causal_images"] == 4
    # causal.json keeps the per-concept rows and the caption pairs, images linked relative to the folder
    causal = read_json(out / "causal.json", "")["methods"]["semi-nmf"]
    assert set(causal) == {"concept", "centred", "random", "diffmean"} and causal["concept"]["n_images"] == 4
    assert causal["concept"]["steering_success"] == row.get("steering_success")
    examples = causal["concept"]["examples"]
    assert examples and {e["mode"] for e in examples} <= {"add", "ablate"}
    for e in examples:
        assert not Path(e["image"]).is_absolute() and (out / e["image"]).is_file()
        assert e["concept"] == 0 and isinstance(e["success"], bool)
    with pytest.raises(MMConceptsError, match="causal_images"):
        evaluate(root / "concepts", root / "features-test", tmp_path / "e2", causal=True, causal_images=0)
    with pytest.raises(MMConceptsError, match="causal method 'kmeans' is not among the compared methods"):
        evaluate(root / "concepts", root / "features-test", tmp_path / "e2", methods=("semi-nmf",), causal=True,
                 causal_methods=("kmeans",))
    assert not (tmp_path / "e2").exists()


def test_concepts_sharing_batches_score_as_each_alone(shapes_concepts):
    """The causal evaluation runs every concept's interventions in shared batches (one row per concept and
    image); each concept's captions and scores are those of a run of that concept alone."""
    cs, meta, adapter = shapes_concepts["concepts"], shapes_concepts["meta"], shapes_concepts["adapter"]
    kw = dict(n_images=5, seed=1, directions=("concept", "random"), batch_size=4)
    together = C.causal_evaluation(cs, meta, adapter, concept_indices=[0, 1, 2], **kw)
    for k in (0, 1, 2):
        alone = C.causal_evaluation(cs, meta, adapter, concept_indices=[k], **kw)
        for direction in ("concept", "random"):
            assert [r for r in together[direction]["concepts"] if r["concept"] == k] == alone[direction]["concepts"]
            assert [e for e in together[direction]["examples"] if e["concept"] == k] == alone[direction]["examples"]


def test_batched_steering_matches_one_image_at_a_time(shapes_concepts):
    from mmconcepts.interventions.steer_captions import steer

    cs, adapter = shapes_concepts["concepts"], shapes_concepts["adapter"]
    images = list(dict.fromkeys(m["image"] for m in shapes_concepts["meta"]))[:3]
    kwargs = dict(model=adapter, positions="token", strength=20.0)
    one = steer(cs, images, 0, batch_size=1, **kwargs)
    batched = steer(cs, images, 0, batch_size=3, **kwargs)
    assert [(r["caption"], r["steered"], r["token_step"]) for r in one] == \
        [(r["caption"], r["steered"], r["token_step"]) for r in batched]


def test_the_prompt_cache_changes_no_caption(shapes_concepts, monkeypatch):
    """The interventions start from each image's prompt read once (models.prompt_cache): the same scores,
    captions and examples as reading each image again for every intervention."""
    cs, meta, adapter = shapes_concepts["concepts"], shapes_concepts["meta"], shapes_concepts["adapter"]
    kw = dict(n_images=5, seed=2, directions=("concept", "random"), concept_indices=[0, 1, 2])
    runner = C._Runner(cs, meta, adapter, 5, 2, 32)
    assert runner.cache is not None  # the shipped captioner: a decoder-only model with a small cache
    cached = C.causal_evaluation(cs, meta, adapter, **kw)
    monkeypatch.setattr(C._Runner, "_prompt_cache", lambda self, ids: None)
    plain = C.causal_evaluation(cs, meta, adapter, **kw)
    assert {d: s.to_json() for d, s in cached.items()} == {d: s.to_json() for d, s in plain.items()}
