"""``extract --positions image``: one row per (kept image, image token), with its box and the object under it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmconcepts.data.shapesworld import SIZES, write_dataset
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import extract, load_features, load_metadata
from mmconcepts.extract.features import iter_feature_shards
from mmconcepts.models import load_model
from mmconcepts.models.patches import image_token_id, image_token_positions, patch_layout


@pytest.fixture(scope="module")
def captioner():
    return load_model(None)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shapes") / "train", n=12, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory, captioner, shapes):
    out = tmp_path_factory.mktemp("image-store") / "store"
    manifest = extract(shapes, "circle", out=out, model=captioner, layers=["norm", "1"], positions="image",
                       dtype="float32", shard_size=50, batch_size=4, progress=False)
    return out, manifest


def _by_image(meta):
    groups = {}
    for i, row in enumerate(meta):
        groups.setdefault(row["index"], []).append(i)
    return groups


def test_rows_are_image_tokens_of_kept_images(store, captioner, shapes):
    out, manifest = store
    meta = load_metadata(out)
    groups = _by_image(meta)
    token_run = extract(shapes, "circle", out=out.parent / "token", model=captioner, layers=["norm"],
                        progress=False)
    kept = sorted(row["index"] for row in load_metadata(out.parent / "token"))
    assert sorted(groups) == kept and manifest["counts"]["kept"] == token_run["counts"]["kept"] == len(kept)
    expected = sum(patch_layout(captioner, Image.open(shapes / meta[rows[0]]["image"]).size).n_tokens
                   for rows in groups.values())
    Z, _ = load_features(out, "norm")
    assert manifest["positions"] == "image" and manifest["n_samples"] == Z.shape[0] == len(meta) == expected
    assert "positions" not in token_run  # a token store's manifest is as before
    for rows in groups.values():
        assert [meta[i]["patch"] for i in rows] == list(range(len(rows)))
        assert len({meta[i]["id"] for i in rows}) == 1


def test_boxes_are_the_layout_and_tile_the_image(store, captioner, shapes):
    out, _ = store
    meta = load_metadata(out)
    for rows in _by_image(meta).values():
        size = Image.open(shapes / meta[rows[0]]["image"]).size
        boxes = np.array([meta[i]["box"] for i in rows], dtype=float)
        np.testing.assert_allclose(boxes, patch_layout(captioner, size).token_boxes(), atol=1e-3)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert (areas > 0).all() and areas.sum() == pytest.approx(size[0] * size[1])
        assert boxes[:, :2].min() >= 0 and (boxes[:, 2] <= size[0]).all() and (boxes[:, 3] <= size[1]).all()


def test_states_are_the_forward_pass_at_the_image_tokens(store, captioner, shapes):
    out, _ = store
    meta = load_metadata(out)
    Z = {layer: load_features(out, layer)[0] for layer in ("norm", "1")}
    for rows in list(_by_image(meta).values())[:2]:
        image = Image.open(shapes / meta[rows[0]]["image"]).convert("RGB")
        inputs = captioner.encode([image], [captioner.prompt()])
        with torch.no_grad():
            hidden = captioner.model(**inputs, output_hidden_states=True).hidden_states
        positions = image_token_positions(inputs["input_ids"][0], image_token_id(captioner, inputs["input_ids"]))
        assert [meta[i]["position"] for i in rows] == positions.tolist()
        torch.testing.assert_close(Z["norm"][rows], hidden[-1][0, positions].float(), atol=1e-4, rtol=0)
        torch.testing.assert_close(Z["1"][rows], hidden[2][0, positions].float(), atol=1e-4, rtol=0)


def test_shapesworld_patches_carry_the_object_under_them(store):
    out, _ = store
    meta = load_metadata(out)
    checked = 0
    for rows in _by_image(meta).values():
        objects = meta[rows[0]]["attributes"]["objects"]
        for obj in objects:  # the patch holding a disc's or a square's centre lies on it (a cell is 8 px)
            holder = [i for i in rows if meta[i]["box"][0] <= obj["x"] < meta[i]["box"][2]
                      and meta[i]["box"][1] <= obj["y"] < meta[i]["box"][3]]
            assert len(holder) == 1
            if obj["shape"] in ("circle", "square"):
                assert meta[holder[0]]["object"] == obj
                checked += 1
        for i in rows:  # a patch is given an object only when its centre is within the object's reach
            obj = meta[i]["object"]
            if obj is not None:
                x0, y0, x1, y1 = meta[i]["box"]
                assert obj in objects
                assert np.hypot((x0 + x1) / 2 - obj["x"], (y0 + y1) / 2 - obj["y"]) <= SIZES[obj["size"]]
                checked += 1
        assert any(meta[i]["object"] is None for i in rows)  # the background
    assert checked > 0


def test_object_at_follows_the_drawn_extent():
    from mmconcepts.data.shapesworld import object_at

    record = {"objects": [{"shape": "triangle", "colour": "red", "size": "large", "position": "left",
                           "x": 20.0, "y": 30.0}]}
    assert object_at(record, 20, 30) == record["objects"][0]
    assert object_at(record, 20, 30 - 10.5) == record["objects"][0]  # near the apex
    assert object_at(record, 20 + 9, 30 - 9) is None  # inside the disc, outside the triangle


def test_streaming_holds_one_shard_at_a_time(store):
    out, manifest = store
    from safetensors import safe_open

    sizes = []
    for i, shard in enumerate(iter_feature_shards(out, "norm")):
        with safe_open(str(out / "shards" / "norm" / f"shard-{i:05d}.safetensors"), framework="pt") as f:
            assert shard.shape[0] == f.get_slice("features").get_shape()[0]
        sizes.append(shard.shape[0])
    assert len(sizes) == manifest["n_shards"] > 1 and sum(sizes) == manifest["n_samples"]
    assert max(sizes) < manifest["shard_size"] + manifest["batch_size"] * 64  # a shard closes at a batch's end


def test_teacher_mode_reads_the_prompt_once(tmp_path, captioner, shapes, store):
    out = tmp_path / "teacher"
    manifest = extract(shapes, "circle", out=out, model=captioner, layers=["norm"], positions="image",
                       mode="teacher", dtype="float32", progress=False)
    meta = load_metadata(out)
    token = extract(shapes, "circle", out=tmp_path / "t", model=captioner, layers=["norm"], mode="teacher",
                    progress=False)
    assert manifest["counts"]["kept"] == token["counts"]["kept"]
    assert len(_by_image(meta)) == token["counts"]["kept"] and manifest["n_samples"] == 64 * len(_by_image(meta))
    # the image tokens precede the caption: the states equal generate mode's for the same image
    gen_meta = load_metadata(store[0])
    gen, _ = load_features(store[0], "norm")
    teach, _ = load_features(out, "norm")
    common = sorted(set(_by_image(meta)) & set(_by_image(gen_meta)))
    assert common
    a, b = _by_image(meta)[common[0]], _by_image(gen_meta)[common[0]]
    torch.testing.assert_close(teach[a], gen[b], atol=1e-4, rtol=0)


def test_another_family_gets_boxes(tmp_path, tiny_qwen2_vl_dir, shapes):
    adapter = load_model(str(tiny_qwen2_vl_dir), device="cpu")
    out = tmp_path / "qwen"
    extract(shapes, "circle", out=out, model=adapter, layers=["norm"], positions="image", mode="teacher",
            limit=4, progress=False)
    meta = load_metadata(out)
    assert meta
    for rows in _by_image(meta).values():
        size = Image.open(shapes / meta[rows[0]]["image"]).size
        layout = patch_layout(adapter, size)
        boxes = np.array([meta[i]["box"] for i in rows], dtype=float)
        assert len(rows) == layout.n_tokens
        np.testing.assert_allclose(boxes, layout.token_boxes(), atol=1e-3)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert areas.sum() == pytest.approx(size[0] * size[1], rel=1e-3)


def test_bad_positions_are_one_line_errors(tmp_path, captioner, shapes, capsys):
    from mmconcepts.cli import main
    from mmconcepts.extract.image_rows import image_positions
    from mmconcepts.models.image_layout import PatchLayout, TokenGrid

    with pytest.raises(MMConceptsError, match="positions"):
        extract(shapes, "circle", out=tmp_path / "x", model=captioner, positions="pixels", progress=False)
    assert main(["extract", "--data", str(shapes), "--token", "circle", "--positions", "pixels", "--out",
                 str(tmp_path / "y")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "--positions" in err[-1] and "Traceback" not in "\n".join(err)
    inputs = captioner.encode([Image.new("RGB", (64, 64))], [captioner.prompt()])
    wrong = PatchLayout((64, 64), 16, (TokenGrid(4, 4, (0, 0, 64, 64), tuple(range(16))),))
    with pytest.raises(MMConceptsError, match="--positions token") as info:
        image_positions(captioner, inputs["input_ids"], [wrong])
    assert "\n" not in str(info.value)


def test_learn_runs_on_an_image_position_store(store, tmp_path):
    from mmconcepts.decompose import learn

    out = learn(store[0], "norm", method="semi-nmf", n_concepts=3, out=tmp_path / "concepts", seed=0)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    assert out.exists() and summary.get("n_samples", store[1]["n_samples"]) == store[1]["n_samples"]
