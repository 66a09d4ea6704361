"""The shipped ShapesWorld captioner: loads through the public path and captions held-out scenes well."""

import json

from mmconcepts.data.shapesworld import write_dataset
from mmconcepts.evaluation.captioning import score_model
from mmconcepts.models import DEFAULT_MODEL_DIR, EMBEDDED_MODEL, load_model

# the bar (shape >= 0.95, exact >= 0.85 on 500 images) less a margin for 96 images
SHAPE_FLOOR = 0.93
EXACT_FLOOR = 0.85


def test_shipped_model_is_a_plain_llava_checkpoint():
    assert (DEFAULT_MODEL_DIR / "config.json").is_file() and (DEFAULT_MODEL_DIR / "model.safetensors").is_file()
    assert json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["architectures"] == [
        "LlavaForConditionalGeneration"]
    assert (DEFAULT_MODEL_DIR / "README.md").is_file()  # the model card
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size < 12 * 2**20


def test_shipped_model_captions_held_out_scenes_above_the_bar(tmp_path):
    adapter = load_model(None, device="cpu")
    assert adapter.family == "llava" and adapter.model_id == EMBEDDED_MODEL
    write_dataset(tmp_path / "held-out", n=96, seed=987, split="test")  # a seed never used in training
    result = score_model(tmp_path / "held-out", model=adapter, progress=False)
    for attribute in ("colour", "size", "position"):
        assert result[attribute] >= 0.95, result
    assert result["shape"] >= SHAPE_FLOOR and result["exact"] >= EXACT_FLOOR, result
