"""The fidelity evaluation: the metrics by hand, and the reconstruction spliced into the shipped captioner
(an exact dictionary changes nothing, a zero one is the zero ablation, a learnt one sits between)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.fidelity import scores as S
from mmconcepts.evaluation.fidelity.splice import Splice, at_positions, at_steps, dictionary_fit, fidelity_evaluation


# ---- the metrics by hand ----------------------------------------------------------------------------------------
def test_kl_and_cross_entropy_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0]]).log()
    q = torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert math.isclose(float(S.kl_divergence(p, q)[0]), math.log(2), rel_tol=1e-6)  # p's zero adds nothing
    assert float(S.kl_divergence(p, p)[0]) == 0.0
    assert math.isclose(float(S.cross_entropy(q, torch.tensor([2]))[0]), math.log(2), rel_tol=1e-6)


def test_recovered_places_the_splice_between_clean_and_ablated():
    assert S.recovered(1.0, 1.0, 5.0) == 1.0 and S.recovered(1.0, 5.0, 5.0) == 0.0
    assert S.recovered(1.0, 2.0, 1.0) is None  # the ablation costs nothing: no scale
    assert math.isclose(S.recovered(1.0, 0.9, 0.2), 0.875)  # an ablation that lowers the loss: still 1 / 0


def test_kl_recovered_is_one_at_the_clean_model_and_zero_at_the_ablation():
    assert S.kl_recovered(0.0, 2.0) == 1.0 and S.kl_recovered(2.0, 2.0) == 0.0
    assert S.kl_recovered(4.0, 2.0) == -1.0  # farther than the ablation
    assert S.kl_recovered(0.1, 0.0) is None and S.kl_recovered(None, 1.0) is None


def test_fit_tally_over_chunks_equals_one_pass():
    from mmconcepts.decompose import SemiNMF

    Z = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    nmf = SemiNMF(n_concepts=5, seed=0).fit(Z)
    whole = dictionary_fit(nmf, Z)
    from mmconcepts.evaluation.fidelity import splice

    chunk, splice.CHUNK = splice.CHUNK, 7 * 5  # 7 rows of 5 concepts
    try:
        chunked = dictionary_fit(nmf, Z)
    finally:
        splice.CHUNK = chunk
    assert whole.keys() == chunked.keys() == {"explained_variance", "l0", "dead_concepts"}
    for key in whole:
        assert math.isclose(whole[key], chunked[key], rel_tol=1e-5, abs_tol=1e-9)  # the encoder per chunk
    rebuilt = nmf.inverse_transform(nmf.transform(Z))
    assert math.isclose(whole["explained_variance"], 1 - float((Z - rebuilt).square().sum())
                        / float((Z - Z.mean(0)).square().sum()), rel_tol=1e-4)
    assert 0 < whole["l0"] <= 5


def test_positions_are_a_parameter_of_the_splice():
    hidden = torch.zeros(2, 4, 3)
    rows, cols = at_positions([3, 1])(hidden, 0)
    assert rows.tolist() == [0, 1] and cols.tolist() == [3, 1]
    assert at_steps([2, 0])(hidden, 1) is None
    rows, cols = at_steps([2, 0])(torch.zeros(2, 1, 3), 2)
    assert rows.tolist() == [0] and cols.tolist() == [0]


# ---- on the shipped captioner -----------------------------------------------------------------------------------
class Planted:
    """A dictionary made by hand: ``transform`` and ``inverse_transform`` as given."""

    concepts_are_points = False

    def __init__(self, components, encode, decode):
        self.components_, self._encode, self._decode = components, encode, decode

    def transform(self, Z):
        return self._encode(torch.as_tensor(Z))

    def inverse_transform(self, V):
        return self._decode(torch.as_tensor(V))


def _identity(D):
    return Planted(torch.eye(D), lambda Z: Z.clone(), lambda V: V.clone())


def _zero(D):
    return Planted(torch.zeros(3, D), lambda Z: torch.zeros(Z.shape[0], 3), lambda V: torch.zeros(V.shape[0], D))


def _random(D):
    R = torch.nn.functional.normalize(torch.randn(4, D, generator=torch.Generator().manual_seed(1)), dim=1)
    return Planted(R, lambda Z: torch.relu(Z @ R.T), lambda V: V @ R)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mmconcepts.concepts import ground
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.extract.features import load_features
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("fidelity")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=32, seed=5, split="train")
    write_dataset(root / "test", n=12, seed=6, split="test")
    for split in ("train", "test"):
        extract(root / split, "circle", out=root / f"features-{split}", model=adapter, layers=["norm", "2"],
                batch_size=32, max_new_tokens=16, progress=False)
    learn(root / "features-train", "norm", method="semi-nmf", n_concepts=4, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    cs = load_concepts(root / "concepts")
    Z, meta = load_features(root / "features-test", "norm", "circle")
    Z2, _ = load_features(root / "features-test", "2", "circle")
    return {"root": root, "adapter": adapter, "concepts": cs, "Z": Z, "Z2": Z2, "meta": meta}


def test_exact_zero_learnt_and_random_dictionaries(shapes):
    cs, adapter, D = shapes["concepts"], shapes["adapter"], shapes["adapter"].hidden_size
    folders = {"semi-nmf": cs, "identity": replace(cs, dictionary=_identity(D)),
               "zero": replace(cs, dictionary=_zero(D)), "random": replace(cs, dictionary=_random(D))}
    result = fidelity_evaluation(folders, shapes["meta"], shapes["Z"], adapter, n_images=8)
    data = result.to_json()
    assert data["layer"] == "norm" and data["positions"] == "token"
    n_images = min(8, len({m["image"] for m in shapes["meta"]}))
    assert data["n_images"] + data["n_skipped"] == n_images and data["n_images"] > 0
    assert data["n_samples"] == len(shapes["Z"])
    assert data["ce_zero"] > data["ce_clean"] and data["kl_zero"] > 0 and data["kl_mean"] > 0
    assert data["kl_token_mean"] > 0 and data["ce_token_mean"] is not None
    assert data["n_positions"] > data["n_images"]  # every position of every sequence, not one per image
    exact, zero, learnt, rand = (result.methods[m] for m in ("identity", "zero", "semi-nmf", "random"))
    # the exact reconstruction changes nothing
    assert exact["kl_divergence"] < 1e-6 and math.isclose(exact["ce_spliced"], data["ce_clean"], abs_tol=1e-5)
    assert math.isclose(exact["ce_recovered_zero"], 1.0, abs_tol=1e-5)
    assert math.isclose(exact["ce_recovered_mean"], 1.0, abs_tol=1e-3)
    assert math.isclose(exact["kl_recovered_zero"], 1.0, abs_tol=1e-5)
    assert math.isclose(exact["kl_recovered_mean"], 1.0, abs_tol=1e-5)
    assert exact["captions_unchanged"] == 1.0 and math.isclose(exact["explained_variance"], 1.0, abs_tol=1e-9)
    # the zero dictionary is the zero ablation
    assert math.isclose(zero["ce_recovered_zero"], 0.0, abs_tol=1e-6)
    assert math.isclose(zero["kl_divergence"], data["kl_zero"], rel_tol=1e-6)
    assert math.isclose(zero["kl_recovered_zero"], 0.0, abs_tol=1e-6)
    assert zero["l0"] == 0.0 and zero["dead_concepts"] == 1.0
    # a learnt dictionary is closer to the model than random directions
    assert learnt["explained_variance"] > rand["explained_variance"]
    assert learnt["kl_divergence"] < rand["kl_divergence"]
    assert learnt["ce_recovered_zero"] > rand["ce_recovered_zero"]
    assert learnt["kl_recovered_mean"] > rand["kl_recovered_mean"] and learnt["kl_recovered_mean"] <= 1.0
    assert 0 < learnt["l0"] <= 4 and 0.0 <= learnt["captions_unchanged"] <= 1.0


def test_splice_at_a_decoder_layer(shapes):
    cs, adapter, D = shapes["concepts"], shapes["adapter"], shapes["adapter"].hidden_size
    at_two = replace(cs, dictionary=_identity(D), summary={**cs.summary, "layer": "2"})
    result = fidelity_evaluation({"identity": at_two}, shapes["meta"], shapes["Z2"], adapter, n_images=6)
    exact = result.methods["identity"]
    assert result.layer == "2" and exact["kl_divergence"] < 1e-6 and exact["captions_unchanged"] == 1.0
    # the splice replaces the state at the position it is given: what the layer hands on is the replacement
    from mmconcepts.data.readers import load_image
    from mmconcepts.models.prompts import append_tokens, last_positions

    seen, image = [], shapes["meta"][0]
    inputs = append_tokens(adapter, [load_image(image["image"])], adapter.prompt(), [[]])
    last = last_positions(inputs)
    marker = torch.full((D,), 0.5)
    splice = Splice(adapter, 2, lambda states: marker.expand_as(states), at_positions(last))
    hooks = adapter.hooks().record(2, lambda hidden, call: seen.append(hidden[0, int(last[0])].clone()))
    with splice, hooks, torch.no_grad():
        adapter.model(**inputs)
    assert splice.edited == 1 and torch.equal(seen[0], marker)


def test_mixed_layers_are_refused(shapes):
    cs = shapes["concepts"]
    other = replace(cs, summary={**cs.summary, "layer": "2"})
    with pytest.raises(MMConceptsError, match="splice concepts of one layer"):
        fidelity_evaluation({"a": cs, "b": other}, shapes["meta"], shapes["Z"], shapes["adapter"], n_images=2)


def test_evaluate_fidelity_writes_metrics_and_the_report(shapes, tmp_path):
    from mmconcepts.cli import build_parser
    from mmconcepts.evaluation.evaluate import evaluate
    from mmconcepts.evaluation.settings import EvaluationSettings
    from mmconcepts.params import from_args
    from mmconcepts.report import build_report

    args = build_parser().parse_args(["evaluate", "--concepts", "c", "--test-features", "t", "--out", "o",
                                      "--fidelity", "--fidelity-images", "5"])
    settings = from_args(EvaluationSettings, args)
    assert settings.fidelity and settings.fidelity_images == 5
    root = shapes["root"]
    metrics = evaluate(root / "concepts", root / "features-test", tmp_path / "eval", model=shapes["adapter"],
                       methods=("semi-nmf", "pca"), baselines=(), fidelity=True, fidelity_images=5)
    fidelity = metrics["fidelity"]
    assert set(fidelity["methods"]) == {"semi-nmf", "pca"}
    assert fidelity["n_images"] + fidelity["n_skipped"] == min(5, len({m["image"] for m in shapes["meta"]}))
    assert set(fidelity["methods"]["semi-nmf"]) == set(S.METRICS)
    assert "## Fidelity" in (tmp_path / "eval" / "metrics.md").read_text()
    html = build_report(root / "concepts", tmp_path / "eval", out=tmp_path / "report.html").read_text()
    assert 'id="fidelity"' in html and "CE recovered (mean)" in html


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_splice_on_every_family(tiny_adapters, family):
    """An exact replacement changes neither the next-token distribution nor a greedy caption (with or without the
    prompt cache); replacing by zero changes the distribution."""
    from PIL import Image

    from mmconcepts.evaluation.fidelity.splice import _log_probs, constant
    from mmconcepts.models.generation import generate_ids
    from mmconcepts.models.prompt_cache import PromptCache
    from mmconcepts.models.prompts import append_tokens, last_positions

    adapter = tiny_adapters[family]
    images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    prompt = adapter.prompt()
    words = adapter.tokenizer("a dog", add_special_tokens=False)["input_ids"]
    inputs = append_tokens(adapter, images, prompt, [words, words[:1]])
    last = last_positions(inputs)
    same = lambda states: states.clone()  # noqa: E731
    clean = _log_probs(adapter, inputs, last, None)
    spliced = Splice(adapter, 0, same, at_positions(last))
    assert torch.allclose(_log_probs(adapter, inputs, last, spliced), clean, atol=1e-5) and spliced.edited == 2
    zero = _log_probs(adapter, inputs, last, Splice(adapter, 0, constant(torch.zeros(adapter.hidden_size)),
                                                    at_positions(last)))
    assert float(S.kl_divergence(clean, zero).min()) > 0
    ids = generate_ids(adapter, images, prompt, max_new_tokens=4)
    cache = PromptCache.build(adapter, images, prompt)
    for prompt_cache in (None, cache):
        splices = []

        def context(rows):
            splices.append(Splice(adapter, 0, same, at_steps([1, 2][rows])))
            return splices[-1]

        again = generate_ids(adapter, images, prompt, max_new_tokens=4, context=context, prompt_cache=prompt_cache)
        assert again == ids and sum(s.edited for s in splices) == 2


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_mean_state_is_the_mean_over_every_position(tiny_adapters, family):
    """The state mean ablation puts in is the layer's mean over every real position of every sequence (image,
    prompt and caption tokens; the left padding of the shorter row left out), batch by batch."""
    from PIL import Image

    from mmconcepts.evaluation.fidelity.mean_state import position_mean
    from mmconcepts.models.prompts import append_tokens

    adapter = tiny_adapters[family]
    images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "green")]
    words = adapter.tokenizer("a dog on the grass", add_special_tokens=False)["input_ids"]
    batches = [append_tokens(adapter, images[:2], adapter.prompt(), [words, words[:2]]),
               append_tokens(adapter, images[2:], adapter.prompt(), [words[:3]])]
    got, count = position_mean(adapter, 0, batches)
    states = []
    for inputs in batches:
        with torch.no_grad():
            hidden = adapter.model(**inputs, output_hidden_states=True).hidden_states[1]  # layer 0's output
        states.append(hidden[inputs["attention_mask"].bool()].double())
    by_hand = torch.cat(states)
    assert count == by_hand.shape[0] == int(sum(int(b["attention_mask"].sum()) for b in batches))
    assert int(batches[0]["attention_mask"].sum()) < batches[0]["attention_mask"].numel()  # padding was there
    assert torch.allclose(got.double(), by_hand.mean(0), atol=1e-4)
