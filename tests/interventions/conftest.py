"""The concepts every intervention test steers with: the tiny LLaVA pipeline's teacher-mode Semi-NMF concepts
of 'dog', and its test images."""

import pytest

from mmconcepts.concepts import load_concepts


@pytest.fixture(scope="module")
def setup(tiny_pipeline):
    adapter = tiny_pipeline["adapter"]
    images = sorted((tiny_pipeline["root"] / "test" / "images").glob("*.png"), key=lambda p: int(p.stem))
    concepts = load_concepts(tiny_pipeline["concepts"])
    return {**tiny_pipeline, "adapter": adapter, "images": images, "concepts": concepts}
