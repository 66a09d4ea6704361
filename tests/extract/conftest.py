import json
import random

import pytest
from PIL import Image


def write_images_dataset(root, n=8, captions=("a dog on the grass", "the hotdog"), seed=0):
    """A folder of small random-colour images with captions.jsonl."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        Image.new("RGB", (40 + 4 * (i % 3), 36), colour).save(root / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "captions": list(captions)})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def images_dataset(tmp_path):
    return write_images_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dirs):
    from mmconcepts.models import load_model

    return {family: load_model(str(path), device="cpu") for family, path in tiny_model_dirs.items()}
