"""Image-token concepts scored against the objects under their patches, per image and end to end."""

import json

import pytest
import torch

from mmconcepts.concepts.pooling import image_groups, patch_grid, per_image, pooled_activations
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.grounding.patches import (patch_coverage, patch_precision, patch_values, pointing,
                                                     random_direction_scores)

RED = {"shape": "circle", "colour": "red", "size": "small", "position": "left"}
BLUE = {"shape": "square", "colour": "blue", "size": "large", "position": "right"}


def _image(index, objects, side=2):
    """``side x side`` patch rows of one image (8-px patches), ``objects`` the object under each patch."""
    return [{"index": index, "token": "circle", "id": f"im{index}", "image": f"im{index}.png", "caption": "c",
             "patch": p, "box": [8.0 * (p % side), 8.0 * (p // side), 8.0 * (p % side) + 8, 8.0 * (p // side) + 8],
             "object": objects[p]} for p in range(side * side)]


@pytest.mark.parametrize("how", ["mean", "max"])
def test_pooling_is_the_mean_or_max_over_each_images_patches_and_the_sparse_form_agrees(how):
    meta = _image(0, [RED, None, None, None]) + _image(1, [None, BLUE, None, None])
    A = torch.rand(8, 3)
    A[4:, 2] = -torch.rand(4)  # signed activations (PCA): a max below zero stays below zero
    A[[1, 2], 1] = 0.0  # zeros a sparse form does not store
    A[:4, 0] = 0.0  # a concept stored nowhere in image 0: its max is 0, not -inf
    A[4, 1], A[5:, 1] = -0.5, 0.0  # one stored negative value and implicit zeros: the max is the zeros' 0
    groups = image_groups(meta)
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7]]
    pooled = pooled_activations(A, groups, how)
    reduce = (lambda x: x.mean(0)) if how == "mean" else (lambda x: x.max(0).values)
    assert torch.allclose(pooled, torch.stack([reduce(A[:4]), reduce(A[4:])]))
    assert torch.allclose(pooled_activations(A.to_sparse_csr(), groups, how), pooled)
    assert torch.allclose(pooled_activations(A, groups[1:], how), reduce(A[4:])[None])  # a subset of images
    images, image_rows = per_image(A, meta, how)
    assert torch.equal(images, pooled) and [m["index"] for m in image_rows] == [0, 1]
    assert all("patch" not in m and "object" not in m for m in image_rows)
    assert per_image(A, [{"index": i} for i in range(8)])[0] is A  # rows that are not patches stay as they are
    with pytest.raises(MMConceptsError, match="unknown pooling 'sum': choose max or mean"):
        pooled_activations(A, groups, "sum")


def test_max_pooling_finds_a_concept_on_a_small_object_that_the_mean_drowns():
    """One red patch among three background ones: the background concept wins the mean, the red one the max."""
    meta = _image(0, [RED, None, None, None])
    A = torch.tensor([[0.0, 4.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # concept 0 background, 1 red
    values = [(None, 0.0), (("colour", "red"), 1.0)]
    assert pooled_activations(A, image_groups(meta), "mean").argmax().item() == 0
    assert pointing(values, A, meta, pool="mean") == 0.0
    assert pointing(values, A, meta, pool="max") == 1.0


def test_a_concepts_map_places_each_patch_by_its_box():
    meta = _image(0, [None] * 9, side=3)
    values = [float(p) for p in range(9)]
    grid = patch_grid(values, meta)
    assert grid["method"] == "activation" and grid["box"] == [0.0, 0.0, 24.0, 24.0]
    assert grid["grid"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    with pytest.raises(MMConceptsError, match="no patch of this image has a box"):
        patch_grid([1.0], [{"patch": 0, "box": None}])


def test_a_concepts_value_is_what_most_of_its_top_patches_lie_on():
    meta = _image(0, [RED, RED, None, BLUE]) + _image(1, [RED, None, None, None])
    A = torch.zeros(8, 3)
    A[[0, 1, 4], 0] = torch.tensor([3.0, 2.0, 1.0])  # red patches
    A[[2, 5], 1] = 1.0  # background only
    A[[3, 0], 2] = torch.tensor([2.0, 1.0])  # one blue, one red circle: shape square vs circle tie broken by share
    values = patch_values(A, meta, n_top=3)
    assert values[0] == (("shape", "circle"), 1.0)  # ties between a red circle's values break by attribute order
    assert values[1][0] is None and values[1][1] == 0.0
    assert values[2][1] == pytest.approx(1 / 3)
    assert patch_precision(A, meta, n_top=3) == pytest.approx((1 + 0 + 1 / 3) / 3)


def test_coverage_counts_the_values_some_concept_owns():
    meta = _image(0, [RED, RED, BLUE, BLUE])
    values = [(("colour", "red"), 1.0), (("colour", "blue"), 0.4)]
    # 8 values with at least 2 patches (4 of each object); red owned by one concept, blue's share too low
    assert patch_coverage(values, meta, n_top=2) == pytest.approx(1 / 8)
    assert patch_coverage(values, meta, n_top=2, min_share=0.3) == pytest.approx(2 / 8)


def test_pointing_hits_when_the_top_concepts_peak_patch_lies_on_its_value():
    meta = _image(0, [None, RED, None, None]) + _image(1, [None, None, RED, BLUE])
    A = torch.zeros(8, 2)
    A[1, 0] = 5.0  # image 0: the red concept peaks on the red patch: a hit
    A[7, 0], A[4, 0] = 1.0, 0.5  # image 1: it peaks on the blue patch: a miss
    values = [(("colour", "red"), 1.0), (None, 0.0)]
    assert pointing(values, A, meta) == 0.5
    A[6, 0] = 2.0  # now on the red patch of image 1
    assert pointing(values, A, meta) == 1.0
    A[:, 1] = 10.0  # a concept without a value on top of every image: never a hit
    assert pointing(values, A, meta) == 0.0


def test_random_directions_are_seeded_and_refuse_rows_without_patch_truth():
    meta = _image(0, [RED, None, BLUE, None]) + _image(1, [None, RED, None, BLUE])
    Z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    a = random_direction_scores(Z, meta, Z, meta, 3, seed=1)
    assert a.to_json() == random_direction_scores(Z, meta, Z, meta, 3, seed=1).to_json()
    chunked = random_direction_scores(lambda: iter([Z[:3], Z[3:]]), meta, Z, meta, 3, seed=1)  # a store's shards
    assert chunked.to_json() == a.to_json()
    assert 0.0 <= a.patch_precision <= 1.0 and 0.0 <= a.pointing <= 1.0
    with pytest.raises(MMConceptsError, match="extract --positions image"):
        patch_values(torch.zeros(2, 1), [{"index": 0}, {"index": 1}])
    with pytest.raises(MMConceptsError, match="activations of shape"):
        patch_values(torch.zeros(3, 1), meta)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from mmconcepts.concepts import ground
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("image-eval")
    adapter = load_model(None)
    for split, n, seed in (("train", 24, 0), ("test", 8, 1)):
        write_dataset(root / split, n=n, seed=seed, split=split)
        extract(root / split, "circle", out=root / f"{split}-store", model=adapter, layers=["1"], positions="image",
                mode="teacher", dtype="float32", progress=False)
    learn(root / "train-store", "1", out=root / "concepts", n_concepts=6, seed=0)
    ground(root / "concepts", model=adapter)
    return root, adapter


def test_evaluate_scores_image_token_concepts_per_image_and_per_patch(image_run):
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.extract import load_metadata

    root, adapter = image_run
    metrics = evaluate(root / "concepts", root / "test-store", root / "eval", model=adapter,
                       methods=("semi-nmf", "pca"), baselines=("rnd-words",))
    test_meta = load_metadata(root / "test-store", "circle")
    n_images = len({m["index"] for m in test_meta})
    assert metrics["n_test"] == n_images < len(test_meta)
    for method in ("semi-nmf", "pca"):
        row = metrics["methods"][method]
        assert {"patch_precision", "pointing", "grounding_precision_top1"} <= set(row)
        assert 0.0 <= row["patch_precision"] <= 1.0 and 0.0 <= row["pointing"] <= 1.0
    assert {"patch_precision", "pointing"} <= set(metrics["baselines"]["random-direction"])
    shown = json.loads((root / "eval" / "explanations.json").read_text())["explanations"]
    assert len(shown) == min(n_images, len(shown)) and len({e["id"] for e in shown}) == len(shown)
    grid = shown[0]["concepts"][0]["heatmap"]["grid"]
    assert (len(grid), len(grid[0])) == (8, 8)  # the captioner's 8 x 8 patches of a 64-px image
    assert "patch_precision" in (root / "eval" / "metrics.md").read_text()


def test_a_concepts_folder_keeps_how_its_store_read_images(image_run):
    """Copied without its store, an image-token folder must still read images as patches (grounding.json)."""
    from mmconcepts.concepts.concept_set import load_concepts

    root, _ = image_run
    cs = load_concepts(root / "concepts")
    assert cs.positions == "image"
    assert json.loads((root / "concepts" / "grounding.json").read_text())["store"]["positions"] == "image"


def test_explain_pools_an_images_patches_and_maps_each_concept(image_run):
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.explanations import explain
    from mmconcepts.extract import load_features

    root, adapter = image_run
    Z, meta = load_features(root / "test-store", "1", "circle")
    first = meta[0]  # a test image whose reference caption holds the word
    image, caption = root / "test" / first["image"], first["caption"]
    result = explain(root / "concepts", image, model=adapter, mode="teacher", caption=caption, top=2)
    assert result["token_found"]
    cs = load_concepts(root / "concepts")
    assert cs.pool == "max" == cs.summary["pool"]  # learn's default, recorded
    rows = [i for i, m in enumerate(meta) if m["index"] == first["index"]]
    assert len(rows) == 64
    pooled = cs.encode(Z[rows]).max(0).values
    assert [c["index"] for c in result["concepts"]] == pooled.topk(2).indices.tolist()
    for c in result["concepts"]:
        assert c["activation"] == pytest.approx(float(pooled[c["index"]]), abs=1e-4)
        flat = [v for row in c["heatmap"]["grid"] for v in row]
        assert flat == pytest.approx(cs.encode(Z[rows])[:, c["index"]].tolist(), abs=1e-4)


def test_the_report_shows_image_token_maps_and_outlines_the_top_patches(image_run, tmp_path):
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.report.html import build_report

    root, adapter = image_run
    folder = tmp_path / "eval"
    evaluate(root / "concepts", root / "test-store", folder, model=adapter, methods=("semi-nmf",), baselines=())
    html = build_report(root / "concepts", folder, out=tmp_path / "report.html").read_text()
    assert html.count('alt="activation map of concept') >= 3  # every shown explanation's concepts carry a map
    cs = load_concepts(root / "concepts")
    top = cs.images(0)
    assert top and all("box" in im and "patch" in im for im in top)
    assert len({im["id"] for im in top}) == len(top)  # distinct images, each at its best patch
    A = cs.activations[:, 0]
    meta = cs.train_meta()
    best = {}
    for i, m in enumerate(meta):
        best[m["id"]] = max(best.get(m["id"], float("-inf")), float(A[i]))
    assert [round(best[im["id"]], 4) for im in top] == [round(im["activation"], 4) for im in top]


def test_a_folder_learnt_with_mean_pooling_explains_by_the_mean(image_run, tmp_path):
    from mmconcepts.concepts import ground
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.decompose import learn
    from mmconcepts.explanations import explain
    from mmconcepts.extract import load_features

    root, adapter = image_run
    learn(root / "train-store", "1", out=tmp_path / "mean", n_concepts=6, seed=0, pool="mean")
    ground(tmp_path / "mean", model=adapter)
    cs = load_concepts(tmp_path / "mean")
    assert cs.pool == "mean"
    Z, meta = load_features(root / "test-store", "1", "circle")
    first = meta[0]
    rows = [i for i, m in enumerate(meta) if m["index"] == first["index"]]
    result = explain(tmp_path / "mean", root / "test" / first["image"], model=adapter, mode="teacher",
                     caption=first["caption"], top=6)
    pooled = cs.encode(Z[rows]).mean(0)
    assert [c["activation"] for c in result["concepts"]] == pytest.approx(sorted(pooled.tolist(), reverse=True),
                                                                          abs=1e-4)
    summary = json.loads((tmp_path / "mean" / "summary.json").read_text())
    (tmp_path / "mean" / "summary.json").write_text(json.dumps({**summary, "pool": "median"}))
    with pytest.raises(MMConceptsError, match="unknown pooling 'median'"):
        load_concepts(tmp_path / "mean").pool


def test_the_command_line_evaluates_caption_grounded_concepts_against_other_methods(image_run, tmp_path):
    """Comparing methods grounds each again by its captions: the command loads the whole model for it, where a
    folder read through the unembedding needs the head only."""
    from mmconcepts.cli import main
    from mmconcepts.concepts import ground
    from mmconcepts.models.options import ModelOptions

    root, _ = image_run
    assert json.loads((root / "concepts" / "grounding.json").read_text())["decode"] == "caption"
    assert main(["evaluate", "--concepts", str(root / "concepts"), "--test-features", str(root / "test-store"),
                 "--out", str(tmp_path / "eval"), "--methods", "semi-nmf,pca", "--baselines", "rnd-words"]) == 0
    pca = json.loads((tmp_path / "eval" / "concepts" / "pca" / "grounding.json").read_text())
    assert pca["decode"] == "caption"
    assert main(["evaluate", "--concepts", str(root / "concepts"), "--test-features", str(root / "test-store"),
                 "--out", str(tmp_path / "extended"), "--methods", "semi-nmf", "--baselines", "",
                 "--extended"]) == 0  # the fixed-word cuts read the captions once, through the whole model
    extended = json.loads((tmp_path / "extended" / "metrics.json").read_text())
    row = extended["methods"]["semi-nmf"]
    assert row["words_per_concept_words3"] <= 3 and row["words_per_concept_words10"] >= row["words_per_concept_words3"]
    with pytest.raises(MMConceptsError, match="only its head is loaded"):
        ground(root / "concepts", model=ModelOptions().load_head())
