"""The one batched generation loop (:func:`mmconcepts.models.generation.generate_ids`) on the shipped captioner."""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest

from mmconcepts.data.shapesworld import render, sample_scene
from mmconcepts.errors import MMConceptsError
from mmconcepts.models import load_model
from mmconcepts.models.generation import decode, generate_ids


@pytest.fixture(scope="module")
def captioner():
    return load_model()


@pytest.fixture(scope="module")
def images():
    return [render(sample_scene(random.Random(i))) for i in range(5)]


def test_batch_size_does_not_change_the_captions(captioner, images):
    prompt = captioner.prompt()
    one = generate_ids(captioner, images, prompt, max_new_tokens=12, batch_size=1)
    three = generate_ids(captioner, images, prompt, max_new_tokens=12, batch_size=3)
    assert decode(captioner, one) == decode(captioner, three)
    assert len(set(decode(captioner, one))) > 1  # the captions differ between images: rows are not mixed up
    assert captioner.caption(images, max_new_tokens=12, batch_size=2) == decode(captioner, one)


def test_the_context_of_each_chunk_gets_its_rows(captioner, images):
    entered = []

    @contextmanager
    def context(rows):
        hooks = captioner.hooks().record("norm", lambda hidden, call: entered.append((rows, hidden.shape[0])))
        with hooks:
            yield

    ids = generate_ids(captioner, images, captioner.prompt(), max_new_tokens=3, min_new_tokens=3, batch_size=2,
                       context=context)
    assert len(ids) == 5 and all(len(row) == 3 for row in ids)
    # each chunk's context is entered around its generation: 3 forward calls of its own batch
    assert entered == [(slice(0, 2), 2)] * 3 + [(slice(2, 4), 2)] * 3 + [(slice(4, 5), 1)] * 3


def test_counts_are_checked(captioner, images):
    with pytest.raises(MMConceptsError, match="batch_size"):
        generate_ids(captioner, images, captioner.prompt(), max_new_tokens=3, batch_size=0)
    with pytest.raises(MMConceptsError, match="max_new_tokens"):
        generate_ids(captioner, images, captioner.prompt(), max_new_tokens=0)
    assert generate_ids(captioner, [], captioner.prompt(), max_new_tokens=3) == []
