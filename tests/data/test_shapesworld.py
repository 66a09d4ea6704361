import json
import random

import numpy as np
import pytest

from mmconcepts.cli import main
from mmconcepts.data import open_dataset
from mmconcepts.data.shapesworld import (
    ATTRIBUTES, COLOURS, POSITIONS, SIZES, SHAPES, canonical_caption, caption, parse_caption, render, sample_scene,
    write_dataset)
from mmconcepts.errors import MMConceptsError


def _truth(scene):
    return [{a: getattr(o, a) for a in ATTRIBUTES} for o in scene.objects]


def test_generator_is_deterministic_per_seed(tmp_path):
    a = write_dataset(tmp_path / "a", n=6, seed=3)
    b = write_dataset(tmp_path / "b", n=6, seed=3)
    c = write_dataset(tmp_path / "c", n=6, seed=4)
    assert (a / "captions.jsonl").read_text() == (b / "captions.jsonl").read_text()
    assert (a / "captions.jsonl").read_text() != (c / "captions.jsonl").read_text()
    for i in range(6):
        name = f"images/{i:06d}.png"
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_objects_never_overlap():
    rng = random.Random(0)
    for _ in range(500):
        scene = sample_scene(rng)
        assert 1 <= len(scene.objects) <= 3
        assert len({o.position for o in scene.objects}) == len(scene.objects)
        for i, p in enumerate(scene.objects):
            for q in scene.objects[i + 1:]:
                # bounding circles are disjoint
                gap = ((p.x - q.x) ** 2 + (p.y - q.y) ** 2) ** 0.5
                assert gap > SIZES[p.size] + SIZES[q.size]


def test_attribute_records_match_the_pixels():
    rng = random.Random(1)
    for _ in range(200):
        scene = sample_scene(rng)
        pixels = np.asarray(render(scene))
        for obj in scene.objects:
            # the centre pixel of every shape (stars included) carries its colour
            assert tuple(pixels[round(obj.y), round(obj.x)]) == COLOURS[obj.colour]


def test_captions_parse_back_to_the_truth_and_vary():
    rng = random.Random(2)
    seen = set()
    for _ in range(300):
        scene = sample_scene(rng)
        for _ in range(3):
            text = caption(scene, rng)
            seen.add(text.split()[0])
            parsed = parse_caption(text)
            assert parsed == _truth(scene)  # objects in reading order
        assert parse_caption(canonical_caption(scene)) == _truth(scene)
    assert {"a", "one", "there"} <= seen  # determiners, prefix


def test_word_order_varies_and_the_noun_is_the_likeliest_word_after_the_determiner():
    from collections import Counter

    from mmconcepts.data.shapesworld import attribute_words

    rng = random.Random(3)
    after_det, placement = Counter(), Counter()
    for _ in range(400):
        scene = sample_scene(rng, n_objects=1)
        obj = scene.objects[0]
        words = caption(scene, rng).split()
        if words[0] == "there":
            words = words[2:]
        after_det[words[1]] += 1
        noun = words.index(obj.shape)
        for attribute in ("size", "colour", "position"):
            said = [i for i, w in enumerate(words) if w in attribute_words(getattr(obj, attribute))]
            assert len(said) == 1, words
            placement[attribute, said[0] < noun] += 1
    # every attribute is said before the noun in some captions and after it in others
    assert all(placement[a, before] > 0 for a in ("size", "colour", "position") for before in (True, False))
    # the shape noun is the most frequent word right after the determiner (a greedy captioner says it first)
    assert sum(after_det[s] for s in SHAPES) > max(c for w, c in after_det.items() if w not in SHAPES)


def test_every_attribute_value_is_drawn_about_evenly():
    """The generator draws every shape, colour, size and position, none starved (a concept needs samples)."""
    from collections import Counter

    rng = random.Random(1)
    counts = {a: Counter() for a in ATTRIBUTES}
    for _ in range(2000):
        for obj in sample_scene(rng).objects:
            for a in ATTRIBUTES:
                counts[a][getattr(obj, a)] += 1
    values = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS}
    for attribute, counter in counts.items():
        assert set(counter) == set(values[attribute]), attribute
        share = min(counter.values()) / max(counter.values())
        assert share > 0.6, (attribute, counter)  # roughly uniform


def test_cli_writes_the_layout(tmp_path):
    assert main(["shapesworld", "--out", str(tmp_path / "d"), "--n", "4", "--seed", "1", "--split", "test"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "d" / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert rows[0]["image"] == "images/000000.png" and rows[0]["split"] == "test"
    assert set(rows[0]["attributes"]) == {"background", "objects"}
    data = open_dataset(tmp_path / "d")
    assert data.has_attributes and data[0].load().size == (64, 64)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "argument --n: must be an integer >= 1"),
    (["--split", "dev"], "unknown split"),
])
def test_cli_bad_input(tmp_path, capsys, args, message):
    assert main(["shapesworld", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["shapesworld", "--out", str(blocker / "d"), "--n", "2"]) == 2
    assert "a file of that name is in the way" in capsys.readouterr().err


def test_refuses_non_empty_output(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    with pytest.raises(MMConceptsError, match="not empty"):
        write_dataset(tmp_path / "d", n=2, seed=0)
    assert (tmp_path / "d" / "keep.txt").exists()
