"""The family matrix: every served vision-language family, tiny and random, through the whole chain.

For each family of :data:`tests.fixtures.families.ALL` (built offline with the family's real classes):

- the chain a user runs (load, extract in generate and in teacher mode, learn, explain, a concept map,
  steer), in-process through the library, ends without an error;
- the stored state at the token equals the model's own ``output_hidden_states`` at that position (read
  independently: the reading that maps use, one forward pass with ``output_hidden_states=True``);
- every image token's box lies inside the image, and the boxes of each grid tile its box exactly, as the
  processor laid the tokens out (families whose decoder holds no tokens on the image are refused in one
  line, and their maps come from occlusion).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from mmconcepts.errors import MMConceptsError
from tests.fixtures.families import ALL

#: Families whose decoder holds no image token with a place on the image (maps: occlusion over a grid).
NOT_PLACED = {"blip-2", "instructblip", "kosmos-2", "idefics2", "mllama", "florence2", "molmo2"}
CAPTION = "a dog on the grass"


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    return {}


def _adapter(family, family_models, tmp_path_factory):
    from mmconcepts.models import load_model

    if family not in family_models:
        folder = ALL[family](tmp_path_factory.mktemp(f"family-{family}"))
        family_models[family] = load_model(str(folder), device="cpu")
    return family_models[family]


def _own_state(adapter, image, prefix: list[int], layer: str):
    """The model's own hidden state (``output_hidden_states``) at the last position of ``prefix`` after the
    prompt: ``hidden_states[i + 1]`` for layer ``i``, the last one for ``"norm"``."""
    from mmconcepts.models.prompts import append_tokens, last_positions

    inputs = append_tokens(adapter, [image], adapter.prompt(), [prefix])
    with torch.no_grad():
        out = adapter.model(**inputs, output_hidden_states=True, use_cache=False)
    states = getattr(out, "decoder_hidden_states", None) or getattr(out, "hidden_states", None)
    if states is None:  # BLIP-2 and InstructBLIP keep the language model's outputs apart
        states = out.language_model_outputs.hidden_states
    state = states[-1] if layer == "norm" else states[int(layer) + 1]
    if layer == "norm" and state.ndim == 4:  # AltUp: the final norm's input is the streams' mean, not kept
        return None
    if state.ndim == 4:  # AltUp streams (Gemma 3n): the active one
        state = state[adapter.active_stream]
    return state[0, int(last_positions(inputs)[0])].float()


@pytest.fixture(scope="module")
def family_stores():
    return {}


def _teacher_store(family, family_models, family_stores, tmp_path_factory):
    """The family's teacher-mode store of 'dog' over 4 images (built once for the module's tests)."""
    from mmconcepts.extract import extract
    from tests.fixtures.datasets import write_images_dataset

    if family not in family_stores:
        adapter = _adapter(family, family_models, tmp_path_factory)
        root = tmp_path_factory.mktemp(f"store-{family}")
        data = write_images_dataset(root / "data", n=4, captions=(CAPTION, "the dog runs"), seed=1)
        manifest = extract(data, "dog", out=root / "teacher", model=adapter, layers=["1", "norm"], mode="teacher",
                           progress=False)
        assert manifest["counts"]["kept"] == 4
        family_stores[family] = (data, root / "teacher", manifest)
    return family_stores[family]


@pytest.mark.parametrize("family", sorted(ALL))
def test_family_stores_the_models_own_states(family, family_models, family_stores, tmp_path_factory):
    from PIL import Image

    from mmconcepts.extract import load_features
    from mmconcepts.attribution.inputs import read_images

    adapter = _adapter(family, family_models, tmp_path_factory)
    _, store, manifest = _teacher_store(family, family_models, family_stores, tmp_path_factory)
    features, rows = load_features(store, "norm")
    first, _ = load_features(store, "1")
    for i in (0, 2):  # images of two sizes, so rows of one batch are padded differently
        image = Image.open(rows[i]["image"]).convert("RGB")
        reading = read_images(adapter, [image], {"token": "dog", "also": (), "instruction": manifest["instruction"],
                                                 "max_new_tokens": 3, "min_new_tokens": 0},
                              mode="teacher", captions=[rows[i]["caption"]])[0]
        for layer, stored in (("norm", features[i]), ("1", first[i])):
            own = _own_state(adapter, image, reading.prefix, layer)
            if own is None:
                continue
            assert torch.allclose(stored, own, atol=1e-4, rtol=1e-3), (layer, (stored - own).abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(ALL))
def test_family_runs_the_chain(family, family_models, family_stores, tmp_path_factory, tmp_path):
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract, load_features
    from mmconcepts.explanations import explain
    from mmconcepts.attribution import concept_maps
    from mmconcepts.concepts import GroundingSettings, ground
    from mmconcepts.interventions.steer_captions import steer

    adapter = _adapter(family, family_models, tmp_path_factory)
    data, store, _ = _teacher_store(family, family_models, family_stores, tmp_path_factory)
    try:  # a random model rarely says "dog": generation must run, and may keep nothing
        extract(data, "dog", out=tmp_path / "gen", model=adapter, layers=["1", "norm"], mode="generate",
                max_new_tokens=3, progress=False)
    except MMConceptsError as exc:
        assert "was kept in no image" in str(exc)
    _, rows = load_features(store, "norm")
    learn(store, "norm", method="semi-nmf", n_concepts=2, out=tmp_path / "concepts", seed=0,
          finish=lambda folder: ground(folder, model=adapter, settings=GroundingSettings()))
    explanation = explain(tmp_path / "concepts", rows[0]["image"], model=adapter, mode="teacher", caption=CAPTION,
                          top=2)
    assert explanation["token_found"] and len(explanation["concepts"]) == 2
    with pytest.warns(UserWarning) if family in NOT_PLACED else contextlib.nullcontext():
        (maps,) = concept_maps(tmp_path / "concepts", [rows[0]["image"]], [[0]], model=adapter, mode="teacher",
                               captions=[CAPTION], method="projection")
    assert maps[0] is not None and np.isfinite(maps[0].grid).all()
    (row,) = steer(tmp_path / "concepts", [rows[0]["image"]], 0, model=adapter, strength=4.0, max_new_tokens=3)
    assert isinstance(row, dict)


@pytest.mark.parametrize("family", sorted(set(ALL) - NOT_PLACED))
@pytest.mark.parametrize("size", [(40, 36), (64, 30), (30, 70)])
def test_image_token_boxes_lie_inside_the_image_and_tile_each_grid(family, size, family_models, tmp_path_factory):
    from mmconcepts.models.patches import patch_layout

    adapter = _adapter(family, family_models, tmp_path_factory)
    layout = patch_layout(adapter, size)
    boxes = layout.token_boxes()
    placed = np.isfinite(boxes).all(1)
    assert placed.sum() >= 0.5 * min(g.rows * g.cols for g in layout.grids)  # some may lie on padding only
    width, height = size
    assert (boxes[placed, 0] >= 0).all() and (boxes[placed, 1] >= 0).all()
    assert (boxes[placed, 2] <= width).all() and (boxes[placed, 3] <= height).all()
    for grid in layout.grids:  # cells tile the grid's box: no gap, no overlap, in row-major order
        cells = grid.cell_boxes()
        assert np.isclose(cells[:, 2] - cells[:, 0], (grid.box[2] - grid.box[0]) / grid.cols).all()
        assert np.isclose(cells[0, :2], grid.box[:2]).all() and np.isclose(cells[-1, 2:], grid.box[2:]).all()
        # the grid lies on the image (a centre crop keeps a part of it, padding reaches past it)
        x0, y0, x1, y1 = max(grid.box[0], 0), max(grid.box[1], 0), min(grid.box[2], width), min(grid.box[3], height)
        assert (x1 - x0) * (y1 - y0) >= 0.3 * width * height
    # the prompt holds as many image tokens as the layout places
    from mmconcepts.models.base import encode_inputs
    from mmconcepts.models.patches import image_token_id

    enc = encode_inputs(adapter.processor, [__import__("PIL.Image").Image.new("RGB", size)], [adapter.prompt()])
    assert int((enc["input_ids"][0] == image_token_id(adapter, enc["input_ids"])).sum()) == layout.n_tokens


@pytest.mark.parametrize("family", sorted(NOT_PLACED))
def test_families_without_placed_tokens_are_refused_in_one_line(family, family_models, tmp_path_factory):
    from mmconcepts.models.patches import patch_layout

    adapter = _adapter(family, family_models, tmp_path_factory)
    with pytest.raises(MMConceptsError) as caught:
        patch_layout(adapter, (40, 36))
    assert "\n" not in str(caught.value)


def test_a_post_norm_decoder_is_read_at_its_last_layer_and_decodes_words_without_a_norm(family_models, family_stores,
                                                                                        tmp_path_factory, tmp_path):
    """Florence-2's BART decoder has no final norm: "norm" hooks the last layer's output, and grounding a
    concept of another layer applies no norm (the last layer's output is what the unembedding reads)."""
    from mmconcepts.decompose import learn
    from mmconcepts.concepts import load_concepts
    from mmconcepts.concepts import GroundingSettings, ground

    adapter = _adapter("florence2", family_models, tmp_path_factory)
    assert adapter.family == "encoder_decoder"
    assert isinstance(adapter.final_norm(), torch.nn.Identity)
    assert adapter.layer_module("norm") is adapter.decoder_layers()[-1]
    info = adapter.info()
    assert info["decoder_layers"].startswith("model.language_model.decoder.layers") and "post-norm" in info["final_norm"]
    _, store, _ = _teacher_store("florence2", family_models, family_stores, tmp_path_factory)
    assert GroundingSettings().norm_for("1")  # effect decoding of layer 1 goes through the final norm
    learn(store, "1", method="semi-nmf", n_concepts=2, out=tmp_path / "concepts", seed=0,
          finish=lambda folder: ground(folder, model=adapter, settings=GroundingSettings()))
    concepts = load_concepts(tmp_path / "concepts", require_grounding=True)
    assert len(concepts.grounding["concepts"]) == 2
