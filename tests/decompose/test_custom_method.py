"""Bring your own method: a class named "module:Class" is learnt, saved, loaded and refused like ours."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmconcepts.decompose import METHODS, ConceptDictionary, learn, load_dictionary, load_method
from mmconcepts.decompose.custom import CustomDictionary
from mmconcepts.decompose.registry import is_method_spec, method_class
from mmconcepts.errors import MMConceptsError

from decompose_helpers import make_store, planted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPEC = "custom_method_fixtures:Projection"


@pytest.fixture
def registry():
    """METHODS as it was before the test (the specs a test registers are dropped afterwards)."""
    before = dict(METHODS)
    yield METHODS
    for name in [n for n in METHODS if n not in before]:
        del METHODS[name]
    METHODS.update(before)


def test_a_plain_estimator_is_wrapped_with_hand_checked_activations(registry):
    cls = load_method(SPEC)
    assert issubclass(cls, CustomDictionary) and cls.method == SPEC and METHODS[SPEC] is cls
    assert load_method(SPEC) is cls and method_class(SPEC) is cls  # registered once
    Z = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    model = cls(n_concepts=2, params={"scale": 2.0}).fit(Z)
    # offset = (2, 3, 4); components = 2 * I[:2]; activations = 2 * (z - offset)[:2]
    assert model.transform(Z).tolist() == [[-2.0, -2.0], [2.0, 2.0]]
    assert model.components_.tolist() == [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    assert isinstance(model.transform(Z.numpy()), np.ndarray)
    # reconstruction V @ U = 4 * (z - offset)[:2] padded: rows (-4, -4, 0), (4, 4, 0); ||Z|| = sqrt(64)
    expected = float(np.linalg.norm(Z.numpy() - [[-4, -4, 0], [4, 4, 0]]) / 8.0)
    assert model.reconstruction_err_ == pytest.approx(expected, rel=1e-6)


def test_save_and_load_restore_the_estimator_without_pickles(registry, tmp_path):
    cls = load_method(SPEC)
    Z = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    model = cls(n_concepts=3, seed=4, params={"scale": 0.5}).fit(Z)
    model.save(tmp_path / "d")
    info = json.loads((tmp_path / "d" / "dictionary.json").read_text())
    assert info["method"] == SPEC and info["params"] == {"n_concepts": 3, "params": {"scale": 0.5}, "seed": 4}
    assert info["extra"]["tensors"] == ["components_", "labels_", "offset_"]
    assert info["extra"]["values"] == {"note_": "fitted", "seen_": 20}
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["dictionary.json", "dictionary.safetensors"]
    del METHODS[SPEC]  # as in a fresh process: loading imports the class the file names
    loaded = load_dictionary(tmp_path / "d")
    assert type(loaded).method == SPEC and loaded.estimator_.random_state == 4
    assert torch.equal(loaded.transform(Z), model.transform(Z))
    assert loaded.estimator_.labels_.dtype == np.int64 and loaded.estimator_.seen_ == 20


def test_learn_accepts_a_spec_and_writes_a_concepts_folder(registry, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    Z, _, _ = planted(n=120, d=16, k=3, noise=0.05, seed=1)
    store = make_store(tmp_path / "features", Z)
    spec = "spherical_kmeans:SphericalKMeans"
    out = learn(store, "3", method=spec, n_concepts=3, out=tmp_path / "c", seed=2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == spec and summary["n_concepts"] == 3 and summary["params"]["seed"] == 2
    model = load_dictionary(out)
    assert np.allclose(np.linalg.norm(model.estimator_.components_, axis=1), 1.0)
    assert bool((model.transform(Z) >= 0).all())
    with pytest.raises(MMConceptsError, match="runs on the CPU only"):
        learn(store, "3", method=spec, n_concepts=3, out=tmp_path / "gpu", device="cuda")


def test_a_concept_dictionary_subclass_joins_under_its_spec(registry, tmp_path):
    spec = "custom_method_fixtures:OwnPCA"
    cls = load_method(spec)
    from custom_method_fixtures import OwnPCA

    assert issubclass(cls, OwnPCA) and cls.method == spec and cls.signed_activations
    Z = torch.randn(30, 6, generator=torch.Generator().manual_seed(1))
    model = cls(n_concepts=2).fit(Z)
    model.save(tmp_path / "d")
    del METHODS[spec]
    loaded = load_dictionary(tmp_path / "d")
    assert type(loaded).method == spec and torch.allclose(loaded.transform(Z), model.transform(Z))


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
    ("custom_method_fixtures:Missing", "module 'custom_method_fixtures' has no class 'Missing'"),
    ("custom_method_fixtures:not_a_class", "is a function, not a class"),
    ("custom_method_fixtures:NoTransform", "has no transform method"),
    ("custom_method_fixtures:NoSize", "takes neither n_concepts nor n_components"),
])
def test_bad_specs_are_refused_on_one_line(registry, spec, message):
    with pytest.raises(MMConceptsError, match=message) as info:
        load_method(spec)
    assert "\n" not in str(info.value) and spec not in METHODS


@pytest.mark.parametrize("name, message", [
    ("NoComponents", "set no components_"),
    ("WrongShape", r"transform returned shape \(4, 3\), expected \(4, 2\)"),
])
def test_a_class_that_breaks_the_contract_is_refused_when_fitted(registry, name, message):
    cls = load_method(f"custom_method_fixtures:{name}")
    with pytest.raises(MMConceptsError, match=message):
        cls(n_concepts=2).fit(np.ones((4, 3), dtype=np.float32))


def test_state_that_needs_a_pickle_is_refused(registry, tmp_path):
    model = load_method("custom_method_fixtures:ObjectState")(n_concepts=2).fit(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(MMConceptsError, match="fitted attribute helper_ is a object"):
        model.save(tmp_path / "d")
    assert not (tmp_path / "d" / "dictionary.json").exists()


def test_unknown_names_and_taken_names(registry):
    assert is_method_spec("a.b:C") and not is_method_spec("a.b") and not is_method_spec("a:b:c")
    with pytest.raises(MMConceptsError, match="unknown method 'ica'.*package.module:ClassName"):
        method_class("ica")
    with pytest.raises(MMConceptsError, match="'semi-nmf' is taken by mmconcepts.decompose.semi_nmf.SemiNMF"):
        type("Impostor", (ConceptDictionary,), {"method": "semi-nmf"})
    assert METHODS["semi-nmf"].__name__ == "SemiNMF"


def test_the_readme_example_is_the_example_file():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = (EXAMPLES / "spherical_kmeans.py").read_text()
    body = code[code.index("import numpy as np"):]
    assert f"```python\n{body}```" in readme
