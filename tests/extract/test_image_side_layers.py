"""The vision encoder's layers and the projector, read at image tokens (``--layers vision.-1,projector``)."""

import json

import pytest
import torch

from mmconcepts.data.shapesworld import write_dataset
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import extract, load_features, read_manifest
from mmconcepts.extract.settings import ExtractionSettings
from mmconcepts.extract.store import stored_layer
from mmconcepts.models import load_model
from mmconcepts.models.patches import image_token_id, image_token_positions


@pytest.fixture(scope="module")
def captioner():
    return load_model(None)


@pytest.fixture(scope="module")
def store(tmp_path_factory, captioner):
    root = tmp_path_factory.mktemp("image-side")
    data = write_dataset(root / "train", n=6, seed=3)
    out = root / "store"
    extract(data, "circle", out=out, model=captioner, layers=["vision.-1", "projector", "0"], positions="image",
            mode="teacher", dtype="float32", batch_size=4, progress=False)
    return root, out


def test_image_side_layers_resolve_and_unknown_ones_are_refused(captioner):
    assert captioner.resolve_layers("vision.-1,projector,vision.0,norm") == ["vision.3", "projector", "vision.0", "norm"]
    assert type(captioner.layer_module("projector")).__name__ == "LlavaMultiModalProjector"
    assert captioner.layer_module("vision.3") is captioner.model.model.vision_tower.encoder.layers[3]
    with pytest.raises(MMConceptsError, match=r"vision.0..vision.3"):
        captioner.resolve_layer("vision.4")
    with pytest.raises(MMConceptsError, match="with --positions image, vision.0..vision.3, projector"):
        captioner.resolve_layer("vision")


def test_image_side_layers_need_image_positions():
    with pytest.raises(MMConceptsError, match="layer projector is on the image side.*--positions image"):
        ExtractionSettings(token="circle", layers=("projector",))


def test_rows_are_the_vision_towers_patches_and_the_projected_image_tokens(store, captioner):
    root, out = store
    manifest = read_manifest(out)
    assert manifest["layers"] == ["vision.3", "projector", "0"] and manifest["widths"] == {"vision.3": 128}
    assert manifest["num_vision_layers"] == 4
    assert [stored_layer(manifest, name) for name in ("vision.-1", "vision.3", "-4", "projector")] == \
        ["vision.3", "vision.3", "0", "projector"]
    for name in ("vision.-2", "vision.-5", "vision.-x"):  # not stored, out of range, no index: refused
        with pytest.raises(MMConceptsError, match=f"layer '{name}' is not in this feature store"):
            stored_layer(manifest, name)
    V, meta = load_features(out, "vision.3", "circle")
    P, _ = load_features(out, "projector", "circle")
    assert V.shape == (len(meta), 128) and P.shape == (len(meta), captioner.hidden_size)
    records = [json.loads(line) for line in (root / "train" / "captions.jsonl").read_text().splitlines()]
    first = meta[0]["index"]
    rows = [i for i, m in enumerate(meta) if m["index"] == first]
    image = records[first]["image"]
    from PIL import Image

    pil = Image.open(root / "train" / image).convert("RGB")
    inputs = captioner.encode([pil], [captioner.prompt()])
    with torch.inference_mode():
        tower = captioner.model.model.vision_tower(inputs["pixel_values"].to(captioner.dtype), output_hidden_states=True)
        embedded = captioner.model(**inputs, output_hidden_states=True).hidden_states[0][0]
    positions = image_token_positions(inputs["input_ids"][0], image_token_id(captioner, inputs["input_ids"]))
    assert torch.allclose(V[rows], tower.hidden_states[-1][0, 1:].float(), atol=1e-4)  # the class token left out
    assert torch.allclose(P[rows], embedded[positions].float(), atol=1e-4)  # the image tokens' input embeddings


def test_vision_concepts_are_read_by_their_captions_not_the_unembedding(store, tmp_path, capsys):
    from mmconcepts.cli import main

    _, out = store
    assert main(["learn", "--features", str(out), "--layer", "vision.-1", "-k", "3", "--no-ground",
                 "--out", str(tmp_path / "vision")]) == 0  # a negative index counts the tower's layers
    assert not (tmp_path / "vision" / "grounding.json").exists()
    assert main(["learn", "--features", str(out), "--layer", "vision.3", "-k", "3",
                 "--out", str(tmp_path / "worded")]) == 0  # auto: the caption decoding, through the whole model
    grounding = json.loads((tmp_path / "worded" / "grounding.json").read_text())
    assert grounding["decode"] == "caption" and len(grounding["concepts"]) == 3
    capsys.readouterr()
    assert main(["learn", "--features", str(out), "--layer", "vision.3", "-k", "3", "--decode", "effect",
                 "--out", str(tmp_path / "unembedded")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "have no words through the unembedding (width 192): ground them with --decode " \
        "caption" in err[0]
    assert not (tmp_path / "unembedded").exists()


def test_projector_concepts_have_words_and_interventions_there_are_refused(store, tmp_path, capsys):
    from mmconcepts.cli import main

    root, out = store
    assert main(["learn", "--features", str(out), "--layer", "projector", "-k", "3",
                 "--out", str(tmp_path / "projector")]) == 0
    grounding = json.loads((tmp_path / "projector" / "grounding.json").read_text())
    assert len(grounding["concepts"]) == 3 and grounding["decode"] == "caption"
    assert main(["learn", "--features", str(out), "--layer", "projector", "-k", "3", "--decode", "effect",
                 "--out", str(tmp_path / "lens")]) == 0  # the projector's width is the language model's: the lens too
    capsys.readouterr()
    image = next((root / "train" / "images").iterdir())
    assert main(["steer", "--concepts", str(tmp_path / "projector"), "--concept", "0", "--image", str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: layer projector is on the image side, and steering and ablation needs a decoder layer; "
                   "learn the concepts at a decoder layer (0, 1, ..., norm)"]
