import json

import pytest
import torch
from safetensors.torch import load_file

from mmconcepts.cli import main
from mmconcepts.decompose import SemiNMF, learn, load_dictionary
from mmconcepts.errors import MMConceptsError
from mmconcepts.files import FORMAT_VERSION, resolve

from decompose_helpers import make_store, planted


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    Z, _, _ = planted(n=300, d=24, k=4, noise=0.05, seed=3)
    return make_store(tmp_path_factory.mktemp("store") / "features", Z), Z


def test_learn_writes_dictionary_activations_and_summary(store, tmp_path):
    path, Z = store
    out = learn(path, "3", method="semi-nmf", n_concepts=4, out=tmp_path / "out", l1=0.01)
    assert sorted(p.name for p in out.iterdir()) == ["activations.safetensors", "dictionary.json",
                                                     "dictionary.safetensors", "summary.json"]
    V = load_file(out / "activations.safetensors")["activations"]
    assert V.shape == (300, 4) and V.dtype == torch.float32 and bool((V >= 0).all())
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "semi-nmf" and s["layer"] == "3" and s["token"] == "dog" and s["model"] == "toy-model"
    assert (s["n_samples"], s["n_concepts"], s["hidden_size"]) == (300, 4, 24)
    assert resolve(s["features"], out) == path.resolve() and s["features_absolute"] == str(path.resolve())
    assert s["streamed"] is False and s["format_version"] == FORMAT_VERSION
    assert 0 <= s["relative_error"] < 0.2 and 0 <= s["sparsity"] <= 1 and s["n_iter"] >= 1
    model = load_dictionary(out)
    assert isinstance(model, SemiNMF) and model.l1 == 0.01
    assert torch.allclose(model.transform(Z), V, atol=1e-3)


def test_same_seed_same_files_bit_for_bit(store, tmp_path):
    path, _ = store
    a = learn(path, -1, n_concepts=4, out=tmp_path / "a", seed=5)  # -1 resolves to layer 3 of 4
    b = learn(path, "3", n_concepts=4, out=tmp_path / "b", seed=5)
    for name in ("dictionary.safetensors", "activations.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_streaming_matches_in_memory(store, tmp_path):
    path, _ = store
    mem = json.loads((learn(path, "3", n_concepts=4, out=tmp_path / "m") / "summary.json").read_text())
    st = json.loads((learn(path, "3", n_concepts=4, out=tmp_path / "s", stream=True) / "summary.json").read_text())
    assert st["streamed"] is True and st["n_samples"] == 300
    assert st["relative_error"] <= 1.02 * mem["relative_error"]


def test_relative_l1_is_a_share_of_the_mean_feature_norm(store, tmp_path):
    path, Z = store
    big = make_store(tmp_path / "big", 10 * Z)
    default = learn(path, "3", n_concepts=4, out=tmp_path / "default")
    small = json.loads((default / "summary.json").read_text())
    mean_norm = float(Z.norm(dim=1).mean())
    assert small["relative_l1"] == 0.05  # semi-nmf's default sparsity
    assert load_dictionary(default).l1 == pytest.approx(0.05 * mean_norm, rel=1e-5)
    scaled = learn(big, "3", n_concepts=4, out=tmp_path / "scaled")
    assert load_dictionary(scaled).l1 == pytest.approx(0.5 * mean_norm, rel=1e-5)
    # the same setting gives the same concepts at ten times the scale (activations ten times larger)
    V1 = load_file(default / "activations.safetensors")["activations"]
    V10 = load_file(scaled / "activations.safetensors")["activations"]
    assert torch.allclose(V10, 10 * V1, rtol=1e-3, atol=1e-3)
    assert bool(((V1 == 0) == (V10 == 0)).float().mean() > 0.99)
    absolute = learn(path, "3", n_concepts=4, out=tmp_path / "absolute", l1=0.01)
    assert json.loads((absolute / "summary.json").read_text())["relative_l1"] is None
    pure = learn(path, "3", n_concepts=4, out=tmp_path / "pure", relative_l1=0)
    assert load_dictionary(pure).l1 == 0.0


@pytest.fixture(scope="module")
def positive_store(tmp_path_factory):
    Z, _, _ = planted(n=200, d=16, k=4, noise=0.0, seed=3, nonnegative_concepts=True)
    return make_store(tmp_path_factory.mktemp("positive") / "features", Z), Z


@pytest.mark.parametrize("method", ["semi-nmf", "nmf", "relu-sae", "reference-dl"])
def test_relative_l1_works_for_every_method_with_an_l1(positive_store, tmp_path, method):
    """l1 = relative_l1 * mean row norm, for every method with an l1 parameter, recorded in the summary.

    reference-dl used to fail (its l1 must be > 0, and learn built it with l1=0 before knowing the scale)."""
    path, Z = positive_store
    out = learn(path, "3", method=method, n_concepts=4, out=tmp_path / method, relative_l1=0.05, max_iter=20)
    summary = json.loads((out / "summary.json").read_text())
    expected = 0.05 * float(Z.norm(dim=1).mean())
    assert summary["relative_l1"] == 0.05 and summary["method"] == method
    assert summary["params"]["l1"] == pytest.approx(expected, rel=1e-5)
    assert load_dictionary(out).l1 == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method, kwargs, match", [
    ("pca", {"relative_l1": 0.05},
     r"^--relative-l1 does not apply to pca; it applies to semi-nmf, nmf, relu-sae, reference-dl$"),
    ("topk-sae", {"l1": 0.1}, "--l1 does not apply to topk-sae"),
    ("reference-dl", {"relative_l1": 0}, "relative_l1=0 does not suit reference-dl: l1 must be"),
])
def test_relative_l1_refused_with_one_line(positive_store, tmp_path, method, kwargs, match):
    path, _ = positive_store
    with pytest.raises(MMConceptsError, match=match) as exc:
        learn(path, "3", method=method, n_concepts=4, out=tmp_path / "out", **kwargs)
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["pca", "kmeans", "simple"])
def test_learn_other_methods(store, tmp_path, method):
    path, _ = store
    out = learn(path, "3", method=method, n_concepts=3, out=tmp_path / method)
    assert json.loads((out / "summary.json").read_text())["method"] == method
    assert load_dictionary(out).method == method


def test_refuses_non_empty_out_unless_overwrite(store, tmp_path):
    path, _ = store
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MMConceptsError, match="not empty"):
        learn(path, "3", n_concepts=3, out=out)
    assert (out / "keep.txt").exists()
    learn(path, "3", n_concepts=3, out=out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "summary.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left behind


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "7"}, "layer '7' is not in this feature store"),
    ({"method": "ica"}, "unknown method"),
    ({"method": "pca", "l1": 0.1}, "--l1 does not apply"),
    ({"method": "reference-dl", "device": "cuda"}, "CPU only"),
    ({"n_concepts": 301}, "only 300 samples"),
    ({"max_iter": 0}, "max_iter"),
    ({"bogus": 1}, "no parameter bogus"),
    ({"stream": True, "method": "pca"}, "cannot stream"),
    ({"l1": 0.1, "relative_l1": 0.1}, "not both"),
    ({"relative_l1": 1.5}, r"relative_l1 \(--relative-l1\) must be"),
])
def test_bad_arguments_write_nothing(store, tmp_path, kwargs, match):
    path, _ = store
    args = {"layer": "3", "method": "semi-nmf", "n_concepts": 3, **kwargs}
    with pytest.raises(MMConceptsError, match=match):
        learn(path, args.pop("layer"), out=tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_cli_learn(store, tmp_path, capsys):
    path, _ = store
    code = main(["learn", "--features", str(path), "--layer", "3", "--method", "semi-nmf", "--n-concepts", "3",
                 "--out", str(tmp_path / "cli"), "--l1", "0.01", "--seed", "1", "--max-iter", "50", "--no-ground"])
    assert code == 0
    out = capsys.readouterr().out
    assert "learnt 3 semi-nmf concepts from 300 samples of layer 3" in out
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["params"]["max_iter"] == 50


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_cli_bad_features_one_line_error_nothing_written(tmp_path, capsys, bad):
    Z, _, _ = planted(n=100, d=8, k=3)
    Z[10, 3] = bad
    path = make_store(tmp_path / "bad", Z)
    code = main(["learn", "--features", str(path), "--layer", "3", "--n-concepts", "3", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Z contains") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_cli_missing_store(tmp_path, capsys):
    code = main(["learn", "--features", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert code == 2 and "no feature store" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--min-ratio", "2"], ["--n-words", "0"]])
def test_cli_bad_grounding_settings_fail_before_learning(store, tmp_path, capsys, flag):
    path, _ = store
    assert main(["learn", "--features", str(path), "--layer", "3", "--n-concepts", "3", "--out",
                 str(tmp_path / "out"), *flag]) == 2
    assert flag[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
