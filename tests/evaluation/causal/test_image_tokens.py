"""The causal evaluation of image-token concepts: edits in the image tokens of the prompt's pass, and nowhere else."""

from __future__ import annotations

import json

import pytest
import torch

from mmconcepts.data.truth import token_object
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.causal import interventions as C
from mmconcepts.evaluation.causal.image_tokens import ImageRunner, PatchIntervention
from mmconcepts.extract.recorders import PrefillRecorder

LAYER = "1"


@pytest.fixture(scope="module")
def image_concepts(tmp_path_factory):
    from mmconcepts.concepts import ground
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_metadata
    from mmconcepts.files import read_json, write_json
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("causal-image")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=24, seed=0, split="train")
    write_dataset(root / "test", n=16, seed=1, split="test")
    for split in ("train", "test"):
        extract(root / split, "circle", out=root / f"features-{split}", model=adapter, layers=[LAYER],
                positions="image", mode="teacher", batch_size=16, progress=False)
    learn(root / "features-train", LAYER, method="semi-nmf", n_concepts=4, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    grounding = read_json(root / "concepts" / "grounding.json", "ground again")
    for k, word in enumerate(("red", "left", "big", "square")):  # three attribute values and a shape (skipped)
        grounding["concepts"][k]["words"] = [{"word": word, "score": 1.0}]
    write_json(root / "concepts" / "grounding.json", grounding)
    cs = load_concepts(root / "concepts")
    meta = load_metadata(root / "features-test", "circle")
    runner = ImageRunner(cs, meta, adapter, n_images=None, seed=0, batch_size=8)
    return {"root": root, "adapter": adapter, "concepts": cs, "meta": meta, "runner": runner}


def _states(runner, i, intervention=None):
    """Every position's state at LAYER of test image ``i``'s prompt pass (with ``intervention`` entered)."""
    adapter = runner.adapter
    inputs = adapter.encode([runner.pils[i]], [runner.prompt])
    every = [torch.arange(inputs["input_ids"].shape[1])]
    with PrefillRecorder(adapter, [LAYER], every) as recorder, torch.inference_mode():
        if intervention is not None:  # entered first: the recorder sees the edited states
            with intervention:
                with PrefillRecorder(adapter, [LAYER], every) as after:
                    adapter.model(**inputs)
            return recorder.gather([0])[LAYER], after.gather([0])[LAYER]
        adapter.model(**inputs)
    return recorder.gather([0])[LAYER]


def _ablation(runner, i, dictionary, k):
    return PatchIntervention(runner.adapter, LAYER, [runner.positions[i]], [runner.lengths[i]], mode="ablate",
                             dictionary=dictionary, concept=[k])


def test_the_runner_reads_each_test_image_once_with_its_image_tokens(image_concepts):
    runner, meta, cs = image_concepts["runner"], image_concepts["meta"], image_concepts["concepts"]
    assert cs.positions == "image" and len(runner.meta) == len({m["index"] for m in meta}) >= 2
    for i, m in enumerate(runner.meta):
        rows = sorted((r for r in meta if r["index"] == m["index"]), key=lambda r: r["patch"])
        assert runner.positions[i].tolist() == [r["position"] for r in rows]
        truth = token_object(m["attributes"]["objects"], "circle")
        on = [r["position"] for r in rows if r["object"] == truth]
        assert on and runner.on_object[i].tolist() == on and len(on) < len(rows)
    assert runner.cache is None  # the interventions edit the prompt's own pass


def test_ablating_an_inactive_concept_changes_nothing(image_concepts):
    runner, cs = image_concepts["runner"], image_concepts["concepts"]

    class Silent:  # the concepts, concept 0 never active (its activations zeroed)
        directions = cs.directions

        @staticmethod
        def encode(Z):
            codes = cs.encode(Z).clone()
            codes[:, 0] = 0
            return codes

    i = 0
    assert bool((cs.encode(_states(runner, i)[runner.positions[i]])[:, 0] != 0).any())  # active without the mask
    clean = _states(runner, i)
    ablation = _ablation(runner, i, Silent, 0)
    before, after = _states(runner, i, ablation)
    assert torch.equal(before, clean) and torch.equal(after, clean) and ablation.edited == 0
    captions = runner.run([0, 1, 0], dict(layer=LAYER, mode="ablate", dictionary=Silent),
                          per_row=dict(concept=[0, 0, 0]))
    assert captions == [runner.before[0], runner.before[1], runner.before[0]]


def test_ablating_an_active_concept_removes_its_contribution_where_it_is_active(image_concepts):
    runner, cs = image_concepts["runner"], image_concepts["concepts"]
    i = 0
    clean = _states(runner, i)
    codes = cs.encode(clean[runner.positions[i]])
    k = int((codes != 0).sum(0).argmax())
    a = codes[:, k]
    active = a != 0
    assert 0 < int(active.sum())
    ablation = _ablation(runner, i, cs, k)
    _, after = _states(runner, i, ablation)
    assert ablation.edited == int(active.sum())
    changed = runner.positions[i][active]
    expected = clean.clone()
    expected[changed] = clean[changed] - a[active, None] * cs.directions[k].float()
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)
    untouched = torch.ones(clean.shape[0], dtype=torch.bool)
    untouched[changed] = False
    assert torch.equal(after[untouched], clean[untouched])  # every other position, image or text, bit for bit


def test_steering_changes_only_the_token_objects_patches(image_concepts):
    runner, cs = image_concepts["runner"], image_concepts["concepts"]
    i = 1
    u = cs.directions[2].float() / cs.directions[2].float().norm()
    steering = PatchIntervention(runner.adapter, LAYER, [runner.on_object[i]], [runner.lengths[i]], mode="add",
                                 direction=u[None], strength=[3.0])
    clean, after = _states(runner, i, steering)
    on = runner.on_object[i]
    assert steering.edited == on.numel() > 0
    torch.testing.assert_close(after[on], clean[on] + 3.0 * u, atol=1e-5, rtol=0)
    rest = torch.ones(clean.shape[0], dtype=torch.bool)
    rest[on] = False
    assert torch.equal(after[rest], clean[rest])
    # through the runner: the steered captions are those of the edit at the object's patches
    unchanged = runner.run([i], dict(layer=LAYER), per_row=dict(direction=(u * 0)[None], strength=[0.0]))
    assert unchanged == [runner.before[i]]


def test_the_runner_edits_a_vision_layer_at_the_objects_patches(image_concepts):
    """At a vision encoder layer the runner's prompt positions become patch indices: steering there adds s u to
    exactly the token object's patches of the layer's output (the class token in front and the rest left)."""
    runner = image_concepts["runner"]
    tower = runner.adapter.model.model.vision_tower.encoder.layers
    seen = []
    handle = tower[2].register_forward_pre_hook(lambda module, args: seen.append(args[0][0].detach().clone()))
    u = torch.randn(tower[1].mlp.fc2.out_features, generator=torch.Generator().manual_seed(0))
    u = u / u.norm()
    i = 1
    try:
        for strength in (0.0, 3.0):
            runner.run([i], dict(layer="vision.1"), per_row=dict(direction=u[None], strength=[strength]))
    finally:
        handle.remove()
    clean, steered = seen[0], seen[len(seen) // 2]  # the first (prompt) pass of each generation
    patches = 1 + torch.searchsorted(runner.positions[i], runner.on_object[i])  # after the class token
    torch.testing.assert_close(steered[patches], clean[patches] + 3.0 * u, atol=1e-5, rtol=0)
    rest = torch.ones(clean.shape[0], dtype=torch.bool)
    rest[patches] = False
    assert torch.equal(steered[rest], clean[rest])


def test_a_prompt_cache_is_refused(image_concepts):
    runner = image_concepts["runner"]
    edit = PatchIntervention(runner.adapter, LAYER, [runner.positions[0]], [runner.lengths[0]], mode="add",
                             direction=torch.zeros(1, runner.adapter.hidden_size), strength=[1.0])
    with pytest.raises(MMConceptsError, match="without a prompt cache"):
        edit.edit(torch.zeros(1, 1, runner.adapter.hidden_size))


def test_targets_are_the_values_under_the_top_patches_not_the_first_words():
    from types import SimpleNamespace

    from mmconcepts.evaluation.causal.image_tokens import patch_targets

    red = {"shape": "circle", "colour": "red", "size": "small", "position": "left"}
    star = {"shape": "star", "colour": "blue", "size": "large", "position": "top"}
    meta = [{"index": i // 4, "patch": i % 4, "object": red if i < 20 else star if i < 40 else None}
            for i in range(60)]
    A = torch.zeros(60, 3)
    A[:20, 0] = 1.0  # top 20 patches on red circles: shape first by attribute order, a shape is skipped ...
    A[20:40, 1] = torch.linspace(2, 1, 20)  # ... on blue stars
    A[40:, 2] = 1.0  # on the background: no value
    words = {0: ["red"], 1: ["left"], 2: ["big"]}
    fake = SimpleNamespace(n_concepts=3, activations=A, train_meta=lambda: meta, words=lambda k: words[k])
    assert patch_targets(fake) == []  # every value is the shape, or none
    meta_sized = [{**m, "object": {k: v for k, v in m["object"].items() if k != "shape"}} if m["object"] else m
                  for m in meta]
    fake.train_meta = lambda: meta_sized
    assert patch_targets(fake) == [(0, ("colour", "red"), ["red"]), (1, ("colour", "blue"), ["left"])]
    assert patch_targets(fake, indices=[1]) == [(1, ("colour", "blue"), ["left"])]
    fake.train_meta = lambda: [{k: v for k, v in m.items() if k != "object"} for m in meta]
    assert patch_targets(fake) is None  # no patch truth: the first words decide, as for word concepts


def test_the_evaluation_and_its_controls_run(image_concepts, monkeypatch):
    cs, meta, adapter = image_concepts["concepts"], image_concepts["meta"], image_concepts["adapter"]
    untrue = [{k: v for k, v in m.items() if k != "object"} for m in cs.train_meta()]
    monkeypatch.setattr(cs, "train_meta", lambda: untrue)  # the planted first words give the targets
    results = C.causal_evaluation(cs, meta, adapter, n_images=3, seed=0, image_strength_factor=2.0)
    assert set(results) == {"concept", "centred", "random", "diffmean"}
    for direction, scores in results.items():
        row = scores.to_json()
        assert row["positions"] == "image" and row["n_images"] == 3 and row["strength_factor"] == 2.0
        assert row["n_concepts"] == 3 and [c["target"] for c in row["concepts"]] == \
            [["colour", "red"], ["position", "left"], ["size", "large"]]
        assert ("ablate_where" in row) == ("ablation_success" in row) == (direction == "concept")
        for metric in C.METRICS:
            assert 0.0 <= row.get(metric, 0.0) <= 1.0
        assert all(e["mode"] in ("add", "ablate") for e in row["examples"])
    objects = C.causal_evaluation(cs, meta, adapter, directions=("concept",), n_images=3, ablate_where="object")
    assert objects["concept"].ablate_where == "object"
    with pytest.raises(MMConceptsError, match="unknown ablate_where"):
        C.causal_evaluation(cs, meta, adapter, ablate_where="everywhere")


def test_token_rows_are_refused_for_image_token_concepts(image_concepts):
    cs, meta, adapter = image_concepts["concepts"], image_concepts["meta"], image_concepts["adapter"]
    token_rows = [{k: v for k, v in m.items() if k not in ("patch", "position")} for m in meta]
    with pytest.raises(MMConceptsError, match="--positions image"):
        C.causal_evaluation(cs, token_rows, adapter, n_images=2)


def test_evaluate_causal_on_an_image_token_folder(image_concepts, tmp_path):
    from mmconcepts.cli import main

    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.evaluation.causal.image_tokens import patch_targets

    root = image_concepts["root"]
    folder = tmp_path / "concepts"  # K = 8 at this size gives concepts on red patches: targets from the truth
    assert main(["learn", "--features", str(root / "features-train"), "--layer", LAYER, "-k", "8",
                 "--out", str(folder)]) == 0
    targets = patch_targets(load_concepts(folder))
    assert targets and all(target[0] != "shape" for _, target, _ in targets)
    out = tmp_path / "eval"
    code = main(["evaluate", "--concepts", str(folder), "--test-features", str(root / "features-test"),
                 "--out", str(out), "--methods", "semi-nmf", "--baselines", "", "--causal", "--causal-images", "2",
                 "--causal-ablate-where", "object",
                 "--device", "cpu"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"fluency", "steering_success"} <= set(metrics["methods"]["semi-nmf"])
    assert {"centred-direction", "random-direction", "diffmean"} <= set(metrics["baselines"])
    causal = json.loads((out / "causal.json").read_text())["methods"]["semi-nmf"]
    assert causal["concept"]["positions"] == "image" and causal["concept"]["ablate_where"] == "object"
    assert causal["concept"]["layer"] == LAYER and causal["concept"]["n_images"] == 2
    assert [c["target"] for c in causal["concept"]["concepts"]] == [list(t) for _, t, _ in targets]
