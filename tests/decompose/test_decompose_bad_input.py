import json

import pytest
import torch
from sklearn.exceptions import NotFittedError

from mmconcepts.decompose import METHODS, SemiNMF, load_dictionary
from mmconcepts.decompose.nnls import nnls
from mmconcepts.errors import MMConceptsError

from decompose_helpers import planted

ONE_LINE = {"match": r"^[^\n]+$"}


def _fresh(name):
    return METHODS[name](3)


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("bad, match", [
    (float("nan"), "1 NaN and 0 infinite"),
    (float("inf"), "0 NaN and 1 infinite"),
])
def test_non_finite_features_refused(name, bad, match):
    Z = torch.rand(30, 6)
    Z[4, 2] = bad
    with pytest.raises(MMConceptsError, match=match):
        _fresh(name).fit(Z)


@pytest.mark.parametrize("name", list(METHODS))
def test_more_concepts_than_samples_refused(name):
    with pytest.raises(MMConceptsError, match="samples|at most"):
        METHODS[name](8).fit(torch.rand(5, 10))


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("Z", [torch.empty(0, 6), torch.empty(6, 0), torch.rand(6), [[1.0, "a"]]])
def test_empty_or_malformed_matrix_refused(name, Z):
    with pytest.raises(MMConceptsError, **ONE_LINE):
        _fresh(name).fit(Z)


def test_dimension_mismatch_between_dictionary_and_samples():
    Z, _, _ = planted(n=100, d=12, k=3)
    model = SemiNMF(3).fit(Z)
    with pytest.raises(MMConceptsError, match="13 columns but the dictionary expects 12"):
        model.transform(torch.rand(4, 13))
    with pytest.raises(MMConceptsError, match="expects 3"):
        model.inverse_transform(torch.rand(4, 2))
    with pytest.raises(MMConceptsError, match="12"):
        nnls(torch.rand(4, 13), model.components_)
    online = SemiNMF(3).partial_fit(Z)
    with pytest.raises(MMConceptsError, match="expects 12"):
        online.partial_fit(torch.rand(40, 13))


@pytest.mark.parametrize("name", list(METHODS))
def test_not_fitted(name):
    # a programmer error, not a user-input one: scikit-learn's NotFittedError (was MMConceptsError)
    for use in (lambda m: m.transform(torch.rand(4, 5)), lambda m: m.inverse_transform(torch.rand(4, 3)),
                lambda m: m.score(torch.rand(4, 5)), lambda m: m.save("/nonexistent/never")):
        with pytest.raises(NotFittedError, match="not fitted") as exc:
            use(_fresh(name))
        assert not isinstance(exc.value, MMConceptsError)


@pytest.fixture()
def saved(tmp_path):
    Z, _, _ = planted(n=100, d=12, k=3)
    return SemiNMF(3).fit(Z).save(tmp_path / "dict")


def _corrupt_truncate(path):
    raw = (path / "dictionary.safetensors").read_bytes()
    (path / "dictionary.safetensors").write_bytes(raw[: len(raw) // 2])


def _corrupt_flip(path):
    raw = bytearray((path / "dictionary.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (path / "dictionary.safetensors").write_bytes(bytes(raw))


def _corrupt_json(path):
    (path / "dictionary.json").write_text("{not json")


def _corrupt_method(path):
    info = json.loads((path / "dictionary.json").read_text())
    info["method"] = "magic"
    (path / "dictionary.json").write_text(json.dumps(info))


def _corrupt_shape(path):
    info = json.loads((path / "dictionary.json").read_text())
    info["tensors"]["components_"] = [4, 12]
    (path / "dictionary.json").write_text(json.dumps(info))


def _corrupt_params(path):
    info = json.loads((path / "dictionary.json").read_text())
    info["params"]["n_concepts"] = -2
    (path / "dictionary.json").write_text(json.dumps(info))


def _missing(path):
    (path / "dictionary.safetensors").unlink()


@pytest.mark.parametrize("damage, match", [
    (_corrupt_truncate, "corrupt dictionary.*checksum"),
    (_corrupt_flip, "corrupt dictionary.*checksum"),
    (_corrupt_json, "corrupt dictionary.*not valid JSON"),
    (_corrupt_method, "corrupt dictionary.*unknown method"),
    (_corrupt_shape, "corrupt dictionary.*shape"),
    (_corrupt_params, "n_concepts"),
    (_missing, "no dictionary at"),
])
def test_corrupt_saved_dictionary_refused(saved, damage, match):
    damage(saved)
    with pytest.raises(MMConceptsError, match=match) as exc:
        load_dictionary(saved)
    assert "\n" not in str(exc.value)


def test_load_checks_the_class(saved):
    from mmconcepts.decompose import PCA

    with pytest.raises(MMConceptsError, match="learnt with 'semi-nmf'"):
        PCA.load(saved)
    assert isinstance(SemiNMF.load(saved), SemiNMF)
