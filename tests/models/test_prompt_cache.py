"""The prompt cache: generations of repeated images from each image's prompt read once are the plain ones,
steered or not, and the cache is refused where it does not apply."""

from __future__ import annotations

import random

import pytest
import torch

from mmconcepts.data.shapesworld import render, sample_scene
from mmconcepts.errors import MMConceptsError
from mmconcepts.interventions.steering import chunk_steering
from mmconcepts.models import load_model
from mmconcepts.models import prompt_cache as P
from mmconcepts.models.generation import generate_ids


@pytest.fixture(scope="module")
def adapter():
    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def images():
    return [render(sample_scene(random.Random(i))) for i in range(3)]


def test_generations_from_the_cache_are_the_plain_ones(adapter, images):
    prompt = adapter.prompt()
    many = [images[i] for i in (0, 1, 2, 2, 0, 1, 0)]
    cache = P.PromptCache.build(adapter, many, prompt, batch_size=2)
    assert cache is not None and len(cache.rows) == 3 and cache.input_ids.shape[0] == 3
    plain = generate_ids(adapter, many, prompt, max_new_tokens=12, batch_size=3)
    assert generate_ids(adapter, many, prompt, max_new_tokens=12, batch_size=3, prompt_cache=cache) == plain
    # steered at the token step, each row its own direction and strength: the same captions as without the cache
    D = adapter.model.config.text_config.hidden_size
    direction = torch.nn.functional.normalize(torch.randn(len(many), D, generator=torch.Generator().manual_seed(0)))
    steps = [1, 0, 2, 1, 0, 3, 1]
    for positions in ("token", "after"):
        context = chunk_steering(adapter, dict(layer="norm", positions=positions), steps,
                                 dict(direction=direction, strength=[40.0] * len(many)))
        steered = generate_ids(adapter, many, prompt, max_new_tokens=12, batch_size=3, context=context)
        assert steered != plain  # the intervention bites
        assert generate_ids(adapter, many, prompt, max_new_tokens=12, batch_size=3, context=context,
                            prompt_cache=cache) == steered


def test_the_cache_is_refused_where_it_does_not_apply(adapter, images, monkeypatch):
    prompt = adapter.prompt()
    cache = P.PromptCache.build(adapter, images, prompt)
    with pytest.raises(MMConceptsError, match="another prompt"):
        cache.inputs(images, adapter.prompt("Describe the image."))
    monkeypatch.setattr(P, "MAX_BYTES", 1024)  # the three images' cache weighs more
    assert P.PromptCache.build(adapter, images, prompt) is None
    monkeypatch.setattr(type(adapter), "is_encoder_decoder", property(lambda self: True))
    assert P.PromptCache.build(adapter, images, prompt) is None
