"""``evaluate`` on the tiny LLaVA pipeline: the metrics.json layout, the baselines, bad input."""

import json

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.evaluate import evaluate


def test_metrics_follow_from_the_concepts_words_and_activations(tiny_pipeline, tiny_clip_dir, minilm_dir,
                                                                 tmp_path):
    """Every row is the pure score of a concepts folder: recompute it from the folder and compare."""
    from mmconcepts.evaluation.grounding import overlap as M
    from mmconcepts.evaluation.grounding.scoring import Scorers, TestSet, score
    from mmconcepts.evaluation.grounding.model_scores import BERTScorer, CLIPScorer
    from mmconcepts.extract import load_features
    from mmconcepts.concepts import load_concepts

    metrics = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "eval",
                       model=tiny_pipeline["adapter"], clip_model=str(tiny_clip_dir), bert_model=str(minilm_dir),
                       n_noise=24)
    assert set(metrics["methods"]) == {"semi-nmf", "pca", "kmeans", "simple"}
    assert set(metrics["baselines"]) == {"rnd-words", "noise-imgs", "gt-captions"}
    Z_test, test_meta = load_features(tiny_pipeline["test"], "norm")
    scorers = Scorers(CLIPScorer(str(tiny_clip_dir), device="cpu"), BERTScorer(str(minilm_dir), device="cpu"))
    main = load_concepts(tiny_pipeline["concepts"])
    for method in metrics["methods"]:
        folder = main if method == "semi-nmf" else load_concepts(tmp_path / "eval" / "concepts" / method)
        expected = score(folder.word_sets(), folder.encode(Z_test), TestSet(test_meta), scorers)
        assert metrics["methods"][method] == expected, method
        assert expected["overlap"] == round(M.overlap([set(w) for w in folder.word_sets()]), 4)
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["methods"] == metrics["methods"] and on_disk["settings"]["n_noise"] == 24
    overlap = json.loads((tmp_path / "eval" / "overlap.json").read_text())["methods"]
    assert overlap["pca"] == M.overlap_matrix([set(w) for w in load_concepts(
        tmp_path / "eval" / "concepts" / "pca").word_sets()])
    explanations = json.loads((tmp_path / "eval" / "explanations.json").read_text())["explanations"]
    top = main.encode(Z_test[:1])[0].topk(3).indices.tolist()
    assert len(explanations) == 8 and [c["index"] for c in explanations[0]["concepts"]] == top
    rnd = metrics["baselines"]["rnd-words"]
    assert rnd["overlap"] <= 1 and set(rnd) == set(metrics["methods"]["semi-nmf"])
    assert (tmp_path / "eval" / "baselines" / "noise-imgs" / "features" / "manifest.json").is_file()


def test_comparison_methods_are_learnt_as_learn_learns_them(tiny_pipeline, tmp_path):
    """A comparison is the folder `mmconcepts learn` would write: the method's defaults (Semi-NMF's relative
    L1), the main folder's K, seed and grounding; scored, it equals that folder scored."""
    from mmconcepts.decompose import learn
    from mmconcepts.concepts import ground, load_concepts

    learn(tiny_pipeline["train"], "norm", method="pca", n_concepts=3, out=tmp_path / "pca", seed=0)
    ground(tmp_path / "pca", model=tiny_pipeline["adapter"], decode="centered", min_ratio=0.2)
    metrics = evaluate(tmp_path / "pca", tiny_pipeline["test"], tmp_path / "eval", model=tiny_pipeline["adapter"],
                       methods=("pca", "semi-nmf"), baselines=())
    learn(tiny_pipeline["train"], "norm", method="semi-nmf", n_concepts=3, out=tmp_path / "snmf", seed=0)
    ground(tmp_path / "snmf", model=tiny_pipeline["adapter"], decode="centered", min_ratio=0.2)
    ours = json.loads((tmp_path / "eval" / "concepts" / "semi-nmf" / "summary.json").read_text())
    theirs = json.loads((tmp_path / "snmf" / "summary.json").read_text())
    assert ours["relative_l1"] == theirs["relative_l1"] == 0.05  # not l1 = 0, as comparisons ran before
    assert ours["params"] == theirs["params"] and ours["n_concepts"] == 3
    grounded = load_concepts(tmp_path / "eval" / "concepts" / "semi-nmf")
    assert grounded.grounding["decode"] == "centered" and grounded.word_sets() == \
        load_concepts(tmp_path / "snmf").word_sets()
    again = evaluate(tmp_path / "snmf", tiny_pipeline["test"], tmp_path / "eval2", model=tiny_pipeline["adapter"],
                     methods=("semi-nmf",), baselines=())
    assert metrics["methods"]["semi-nmf"] == again["methods"]["semi-nmf"]


def test_pca_concepts_have_two_sides(tiny_pipeline, tmp_path):
    """A PCA component is two concepts, +u and -u: a sample far on the negative side is explained by it."""
    from mmconcepts.decompose import learn
    from mmconcepts.extract import load_features
    from mmconcepts.concepts import ground, load_concepts

    learn(tiny_pipeline["train"], "norm", method="pca", n_concepts=3, out=tmp_path / "pca", seed=0)
    grounding = ground(tmp_path / "pca", model=tiny_pipeline["adapter"], min_ratio=0)
    cs = load_concepts(tmp_path / "pca")
    assert cs.n_concepts == 6 and [c["sign"] for c in grounding["concepts"]] == [1, 1, 1, -1, -1, -1]
    Z, _ = load_features(tiny_pipeline["train"], "norm")
    V = cs.dictionary.transform(Z)
    A = cs.encode(Z)
    assert bool((A >= 0).all()) and torch.equal(A[:, 3:], (-V).clamp(min=0)) and torch.equal(A[:, :3], V.clamp(min=0))
    row = int(V[:, 0].argmin())  # the most negative sample of component 0 is the top image of concept 3
    assert grounding["concepts"][3]["images"][0]["activation"] == pytest.approx(float(-V[row, 0]), abs=1e-4)


def test_metrics_without_scorers_are_absent(tiny_pipeline, tmp_path):
    metrics = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "eval",
                       model=tiny_pipeline["adapter"], methods=("semi-nmf",), baselines=("gt-captions",))
    assert set(metrics["methods"]["semi-nmf"]) == {"overlap"}
    assert metrics["baselines"]["gt-captions"] == {}


def test_caption_accuracy_is_written_with_the_metrics(tiny_pipeline, tmp_path):
    """A caller's caption accuracy goes into metrics.json (and metrics.md is unchanged by it) when evaluate writes
    the folder: nothing rewrites a finished file."""
    accuracy = {"shape": 1.0, "colour": 0.5, "size": 0.5, "position": 1.0, "exact": 0.5, "n_images": 2}
    metrics = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "eval",
                       model=tiny_pipeline["adapter"], methods=("semi-nmf",), baselines=(), caption_accuracy=accuracy)
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["caption_accuracy"] == on_disk["caption_accuracy"] == accuracy
    without = evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "eval2",
                       model=tiny_pipeline["adapter"], methods=("semi-nmf",), baselines=())
    assert "caption_accuracy" not in without
    assert (tmp_path / "eval" / "metrics.md").read_text() == (tmp_path / "eval2" / "metrics.md").read_text()


def test_bad_input(tiny_pipeline, tmp_path, capsys):
    with pytest.raises(MMConceptsError, match="unknown method or baseline 'nope'"):
        evaluate(tiny_pipeline["concepts"], tiny_pipeline["test"], tmp_path / "e1", methods=("nope",))
    import shutil

    for key, value, message in (("token", "cat", "for token 'cat'"), ("model", "other/model", "from model")):
        other = tmp_path / f"store-{key}"
        shutil.copytree(tiny_pipeline["test"], other)
        manifest = json.loads((other / "manifest.json").read_text())
        (other / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(MMConceptsError, match=message):
            evaluate(tiny_pipeline["concepts"], other, tmp_path / "e1")
    # a missing test store, and one without the concepts' layer
    code = main(["evaluate", "--concepts", str(tiny_pipeline["concepts"]), "--test-features", str(tmp_path / "none"),
                 "--out", str(tmp_path / "e2")])
    assert code == 2 and "no feature store" in capsys.readouterr().err
    other = tmp_path / "store-layer"
    shutil.copytree(tiny_pipeline["test"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "layers": ["0"]}))
    code = main(["evaluate", "--concepts", str(tiny_pipeline["concepts"]), "--test-features", str(other),
                 "--out", str(tmp_path / "e2")])
    assert code == 2 and "layer 'norm' is not in this feature store; stored layers: 0" in capsys.readouterr().err
    code = main(["evaluate", "--concepts", str(tiny_pipeline["concepts"]), "--test-features", str(tiny_pipeline["test"]),
                 "--out", str(tmp_path / "e3"), "--clip-model", str(tmp_path / "no-clip"), "--baselines", ""])
    assert code == 2 and "--clip-model" in capsys.readouterr().err
    for name in ("e1", "e2", "e3"):
        assert not (tmp_path / name).exists()
