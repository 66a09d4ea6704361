"""An SAE saved by SAELens on the shipped ShapesWorld captioner's layer 3 imports through the command line, and
ground, explain (with maps), steer and evaluate run on it; a 100k-latent one imports and grounds without an
``N x K`` matrix."""

import contextlib
import io
import json

import pytest
import torch

from mmconcepts.cli import main

from exchange_helpers import saelens

pytestmark = pytest.mark.slow


def _cli(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, err.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.extract import extract

    root = tmp_path_factory.mktemp("shapes")
    for split, n, seed in (("train", 48, 0), ("test", 24, 1)):
        write_dataset(root / split, n=n, seed=seed, split=split)
        extract(root / split, "circle", out=root / f"features-{split}", layers=["3"], mode="teacher",
                progress=False)
    return root


def test_a_saelens_sae_runs_through_ground_explain_steer_and_evaluate(shapes, tmp_path):
    from mmconcepts.concepts import load_concepts

    saelens(tmp_path / "sae", "jumprelu", 192, 24)
    concepts = tmp_path / "concepts"
    printed = _cli(["import-sae", str(tmp_path / "sae"), "--features", str(shapes / "features-train"), "--out",
                    str(concepts), "--device", "cpu"])
    assert "as 24 jumprelu-sae concepts of layer 3" in printed
    cs = load_concepts(concepts, require_grounding=True)
    assert len(cs.grounding["concepts"]) == 24 and cs.summary["imported_from"]["layout"] == "saelens"
    image = str(next((shapes / "test" / "images").iterdir()))
    teacher = ["--mode", "teacher", "--caption", "a circle in red at the top of small size"]
    explained = json.loads(_cli(["explain", "--concepts", str(concepts), "--image", image, *teacher, "--json"]))
    assert explained["token_found"] and explained["concepts"]
    _cli(["explain", "--concepts", str(concepts), "--image", image, *teacher, "--heatmaps", "projection", "--json"])
    _cli(["steer", "--concepts", str(concepts), "--concept", "0", "--strength", "4", "--image", image,
          "--max-new-tokens", "4"])
    _cli(["evaluate", "--concepts", str(concepts), "--test-features", str(shapes / "features-test"), "--out",
          str(tmp_path / "eval"), "--methods", "jumprelu-sae", "--baselines", ""])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["main_method"] == "jumprelu-sae"


def test_a_100k_latent_sae_imports_and_grounds_without_a_dense_n_by_k(shapes, tmp_path, monkeypatch):
    """The activations stay sparse from the encoder to grounding.json: densifying a sparse tensor, or scoring
    more than a chunk of concepts against the vocabulary at once, fails the test."""
    from safetensors.torch import load_file

    import mmconcepts.concepts.concept_set as concept_set
    from mmconcepts.concepts import decoding
    from mmconcepts.concepts.concept_set import load_concepts

    K = 100_000
    saelens(tmp_path / "sae", "topk", 192, K, k=8)
    monkeypatch.setattr(concept_set, "DENSE_LIMIT", 0)  # as for a store of millions of rows

    def refuse(self, *args, **kwargs):
        raise AssertionError("a sparse N x K activation matrix was densified")

    largest = []
    scores = decoding.concept_scores

    def scored(components, *args, **kwargs):
        largest.append(int(components.shape[0]))
        return scores(components, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to_dense", refuse)
    monkeypatch.setattr(decoding, "concept_scores", scored)
    _cli(["import-sae", str(tmp_path / "sae"), "--features", str(shapes / "features-train"), "--out",
          str(tmp_path / "big"), "--device", "cpu"])
    stored = load_file(tmp_path / "big" / "activations.safetensors")
    n = int(stored["shape"][0])
    assert "activations" not in stored and stored["values"].numel() <= 8 * n
    assert max(largest) * 2048 <= decoding.SCORE_ENTRIES  # the captioner's vocabulary: 2048 tokens
    cs = load_concepts(tmp_path / "big", require_grounding=True)
    entries = cs.grounding["concepts"]
    active = {int(c) for c in stored["col_indices"].tolist()}
    assert len(entries) == K and all(bool(entries[k]["images"]) == (k in active) for k in range(0, K, 997))
    assert any(entries[k]["words"] for k in active)
    # and it evaluates: the grounding metrics (coverage and purity from the sparse form), the word overlap without
    # a K x K matrix (overlap.json holds null for it), the explanations
    _cli(["evaluate", "--concepts", str(tmp_path / "big"), "--test-features", str(shapes / "features-test"),
          "--out", str(tmp_path / "eval"), "--methods", "topk-sae", "--baselines", ""])
    import json

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["methods"]["topk-sae"]["overlap"] <= 1.0 and metrics["n_concepts"] == K
    assert json.loads((tmp_path / "eval" / "overlap.json").read_text())["methods"]["topk-sae"] is None
