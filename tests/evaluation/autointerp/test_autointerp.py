"""Concepts named from their top images (``evaluate --autointerp``): the scores by hand, the contrastive names,
and a run on a small ShapesWorld store whose namer is told the truth or lies."""

from __future__ import annotations

import math

import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.autointerp.naming import Captioner, autointerp_evaluation, contrastive_words
from mmconcepts.evaluation.autointerp.scores import AutointerpRow, ConceptName, detection, name_truth
from mmconcepts.evaluation.autointerp.settings import AutointerpSettings


def test_detection_is_a_balanced_accuracy():
    top, rand = ["a red circle", "a blue circle"], ["a blue circle", "a green circle", "a red circle", "a circle"]
    assert detection(["red"], top, rand) == (1 / 2 + 3 / 4) / 2
    assert detection(["circle"], top, rand) == 0.5  # a word every caption holds tells nothing
    assert detection(["Red"], top, []) is None and detection([], top, rand) == 0.5


def test_name_truth_reads_the_token_object_only():
    records = [{"objects": [{"shape": "square", "colour": "red"}, {"shape": "circle", "colour": "blue"}]},
               {"objects": [{"shape": "circle", "colour": "blue", "size": "large"}]}]
    assert name_truth(["blue"], records, "circle") == 1.0
    assert name_truth(["red"], records, "circle") == 0.0  # true of the square, not of the circle
    assert name_truth(["big"], records, "circle") == 0.5  # a synonym, true of one circle of two
    assert name_truth(["image"], records, "circle") == 0.0  # names no value
    assert name_truth(["blue"], records, "star") is None


def test_contrastive_words_keep_what_sets_the_top_images_apart():
    top = ["a big red circle", "a red circle at the top", "a red circle", "a small circle"]
    rand = ["a blue circle", "a big circle", "a circle at the top", "a red square and a circle"]
    assert contrastive_words(top, rand, exclude=["circle"]) == ["red"]
    # nothing held by half of the top captions more than by the random ones: no name
    assert contrastive_words(["a circle"], ["a circle"], exclude=["circle"]) == []
    assert contrastive_words([], rand) == []
    assert contrastive_words(top, [], exclude=["circle"], n_words=1) == ["red"]


def test_row_means_over_named_concepts():
    names = [ConceptName(0, ["red"], ["red"], 1.0, 0.5, 1.0, 0.0), ConceptName(1, [], ["blue"], None, 1.0, None, 1.0)]
    row = AutointerpRow.of(names)
    assert row["name_truth"] == 1.0 and row["word_truth"] == 0.5 and row["named_concepts"] == 0.5
    assert math.isclose(row["word_detection"], 0.75)


def test_settings_are_checked():
    with pytest.raises(MMConceptsError, match="n_top"):
        AutointerpSettings(n_top=0)


class _TruthfulNamer:
    """A stand-in namer that captions each image with the words of its token object's true attributes (or
    with one fixed caption when it lies), so the run's scores are known without a trained captioner."""

    model_id = "truthful"

    def __init__(self, meta, lies=False):
        self.meta, self.lies, self.calls = meta, lies, 0

    def caption(self, images, max_new_tokens=50):
        self.calls += 1
        out = []
        for im in images:
            record = next(m["attributes"] for m in self.meta if m["image_pil_key"] == im.tobytes())
            circle = next(o for o in record["objects"] if o["shape"] == "circle")
            out.append("a circle" if self.lies else f"a {circle['size']} {circle['colour']} circle")
        return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.data.readers import load_image
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_features, load_metadata

    root = tmp_path_factory.mktemp("autointerp")
    for split, n, seed in (("train", 48, 3), ("test", 16, 4)):
        write_dataset(root / split, n=n, seed=seed, split=split)
        extract(root / split, "circle", out=root / f"features-{split}", layers=["norm"], mode="teacher",
                progress=False)
    learn(root / "features-train", "norm", method="semi-nmf", n_concepts=4, out=root / "concepts", seed=0)
    meta = load_metadata(root / "features-train", "circle") + load_metadata(root / "features-test", "circle")
    for m in meta:
        m["image_pil_key"] = load_image(m["image"]).tobytes()
    Z, test_meta = load_features(root / "features-test", "norm", "circle")
    return load_concepts(root / "concepts"), Z, test_meta, meta


def test_a_truthful_namer_writes_true_names_and_a_silent_one_none(shapes):
    cs, Z, test_meta, meta = shapes
    settings = AutointerpSettings(n_top=6, n_random=12, n_detect=4)
    namer = _TruthfulNamer(meta)
    result = autointerp_evaluation({"semi-nmf": cs}, Z, test_meta, namer, settings)
    names = result.methods["semi-nmf"]
    assert len(names) == cs.n_concepts and result.ground_truth and result.namer == "truthful"
    for n in names:
        assert "circle" not in n.name and len(n.name) <= 3
        if n.name:  # a name from true captions: its first word is true of at least half of the top circles
            assert n.name_truth >= 0.5 and 0.0 <= n.name_detection <= 1.0
    assert any(n.name for n in names)
    # every image captioned once: the captions are kept between concepts
    assert namer.calls <= 4 * cs.n_concepts
    silent = autointerp_evaluation({"semi-nmf": cs}, Z, test_meta, _TruthfulNamer(meta, lies=True), settings)
    assert all(n.name == [] for n in silent.methods["semi-nmf"])
    row = silent.rows()["semi-nmf"]
    assert row["named_concepts"] == 0.0 and "name_truth" not in row
    assert result.to_json()["methods"]["semi-nmf"]["row"] == result.rows()["semi-nmf"].to_json()


def test_captioner_captions_each_image_once(shapes):
    _, _, test_meta, meta = shapes
    namer = _TruthfulNamer(meta)
    captioner = Captioner(namer)
    paths = [m["image"] for m in test_meta[:3]]
    first = captioner(paths + paths[:1])
    assert captioner(paths[::-1]) == first[:3][::-1] and namer.calls == 1
    assert first[0] == first[3]


def test_evaluate_autointerp_writes_the_names_beside_the_metrics(shapes, tmp_path):
    import json

    from mmconcepts.cli import main
    from mmconcepts.concepts import ground

    cs = shapes[0]
    ground(cs.path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--concepts", str(cs.path), "--test-features", str(cs.path.parent / "features-test"),
                 "--out", str(out), "--methods", "semi-nmf", "--baselines", "", "--autointerp"]) == 0
    row = json.loads((out / "metrics.json").read_text())["methods"]["semi-nmf"]
    names = json.loads((out / "autointerp.json").read_text())
    assert names["namer"] and names["ground_truth"] is True
    concepts = names["methods"]["semi-nmf"]["concepts"]
    assert len(concepts) == cs.n_concepts and names["methods"]["semi-nmf"]["row"] == {
        k: row[k] for k in ("name_detection", "word_detection", "name_truth", "word_truth", "named_concepts") if k in row}
    assert 0.0 <= row["word_truth"] <= 1.0 and "name_truth" in (out / "metrics.md").read_text()
    from mmconcepts.concepts.concept_set import load_concepts

    grounded = load_concepts(cs.path).grounding["concepts"]
    assert all(c["words"] == [w["word"] for w in grounded[c["index"]]["words"]][:3] for c in concepts)


def test_another_model_can_be_the_namer(shapes, tmp_path, tiny_llava_dir):
    """``--namer`` loads any image-text-to-text model (here a tiny random LLaVA saved with save_pretrained) and
    its captions, not the studied model's, write the names."""
    import json

    from mmconcepts.cli import main
    from mmconcepts.concepts import ground

    cs = shapes[0]
    if not (cs.path / "grounding.json").exists():
        ground(cs.path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--concepts", str(cs.path), "--test-features", str(cs.path.parent / "features-test"),
                 "--out", str(out), "--methods", "semi-nmf", "--baselines", "", "--autointerp",
                 "--namer", str(tiny_llava_dir)]) == 0
    names = json.loads((out / "autointerp.json").read_text())
    assert names["namer"] == str(tiny_llava_dir) and names["settings"]["namer"] == str(tiny_llava_dir)
    shipped = {c for c in cs.train_meta()[0]["caption"].split()}
    captions = [c for concept in names["methods"]["semi-nmf"]["concepts"] for c in concept["top_captions"]]
    assert captions and not any(set(c.split()) == shipped for c in captions)  # not the studied model's captions
