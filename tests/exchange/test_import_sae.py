"""SAEs saved by sae_lens, sparsify and dictionary_learning import as concepts folders whose activations are the
package's own ``encode`` of the same features; bad inputs are one line, and nothing is written."""

import contextlib
import re
import io
import json

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.concepts import load_concepts
from mmconcepts.errors import MMConceptsError
from mmconcepts.exchange.import_sae import import_sae

from exchange_helpers import HOOK, dictionary_learning, make_store, saelens, sparsify

D, K = 16, 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    Z = torch.randn(150, D, generator=torch.Generator().manual_seed(0))
    return make_store(tmp_path_factory.mktemp("store") / "features", Z), Z


def _imported(source, store, out, **kw):
    path, Z = store
    import_sae(source, features=path, out=out, **kw)
    return load_concepts(out), Z


def _check(concepts, Z, expected, method):
    assert concepts.summary["method"] == method
    assert torch.allclose(concepts.activations, expected, atol=1e-5)
    assert torch.allclose(concepts.encode(Z), expected, atol=1e-5)
    assert concepts.summary["imported_from"]["sha256"] and concepts.summary["layer"] == "3"


@pytest.mark.parametrize("arch, method, cfg", [
    ("standard", "relu-sae", {}),
    ("topk", "topk-sae", {}),
    ("topk", "topk-sae", {"rescale_acts_by_decoder_norm": True}),
    ("jumprelu", "jumprelu-sae", {}),
    ("jumprelu", "batchtopk-sae", {"metadata": {"training_architecture": "batchtopk"}}),
    ("standard", "relu-sae", {"apply_b_dec_to_input": False}),
])
def test_saelens_sae_imports_with_its_own_activations(store, tmp_path, arch, method, cfg):
    sae = saelens(tmp_path / "sae", arch, D, K, **cfg)
    concepts, Z = _imported(tmp_path / "sae", store, tmp_path / "out")
    with torch.no_grad():
        _check(concepts, Z, sae.encode(Z), method)


def test_saelens_input_scaling_is_folded_or_refused(store, tmp_path):
    sae = saelens(tmp_path / "sae", "standard", D, K, normalize_activations="expected_average_only_in")
    with pytest.raises(MMConceptsError, match="no scaling factor"):
        import_sae(tmp_path / "sae", features=store[0], out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    (tmp_path / "sae" / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 2.5}))
    concepts, Z = _imported(tmp_path / "sae", store, tmp_path / "out")
    with torch.no_grad():  # what SAELens encodes once the factor is folded, as its trainer does at the end
        sae.fold_activation_norm_scaling_factor(2.5)
        _check(concepts, Z, sae.encode(Z), "relu-sae")


def test_sparsify_run_folder_imports_the_chosen_hookpoint(store, tmp_path):
    encode = sparsify(tmp_path / "run" / "layers.3", D, K)
    sparsify(tmp_path / "run" / "layers.1.mlp", D, K, seed=1)
    with pytest.raises(MMConceptsError, match=r"holds 2 SAEs \(layers.1.mlp, layers.3\): choose one with --hookpoint"):
        import_sae(tmp_path / "run", features=store[0], out=tmp_path / "x")
    concepts, Z = _imported(tmp_path / "run", store, tmp_path / "out", hookpoint="layers.3")
    with torch.no_grad():
        _check(concepts, Z, encode(Z), "topk-sae")
    assert concepts.summary["imported_from"]["hook"] == "layers.3"
    with pytest.raises(MMConceptsError, match="names no layer of the model: give the store's layer"):
        import_sae(tmp_path / "run", hookpoint="layers.1.mlp", features=store[0], out=tmp_path / "y")
    import_sae(tmp_path / "run", hookpoint="layers.1.mlp", layer="3", features=store[0], out=tmp_path / "y")


@pytest.mark.parametrize("dict_class, method", [
    ("AutoEncoder", "relu-sae"), ("AutoEncoderTopK", "topk-sae"), ("BatchTopKSAE", "batchtopk-sae"),
    ("JumpReluAutoEncoder", "jumprelu-sae"), ("MatryoshkaBatchTopKSAE", "matryoshka-sae")])
def test_dictionary_learning_dictionary_imports_with_its_own_activations(store, tmp_path, dict_class, method):
    ae = dictionary_learning(tmp_path / "trainer_0", dict_class, D, K)
    concepts, Z = _imported(tmp_path, store, tmp_path / "out")  # the run folder's only trainer
    with torch.no_grad():
        _check(concepts, Z, ae.encode(Z), method)


def test_large_sparse_activations_are_stored_sparse(store, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import mmconcepts.concepts.concept_set as concept_set
    from mmconcepts.concepts.activations import activation_column, is_sparse

    sae = saelens(tmp_path / "sae", "topk", D, 5000, k=3)
    concepts, Z = _imported(tmp_path / "sae", store, tmp_path / "out")
    stored = load_file(tmp_path / "out" / "activations.safetensors")
    assert "activations" not in stored and stored["values"].numel() == 3 * Z.shape[0]
    monkeypatch.setattr(concept_set, "DENSE_LIMIT", 0)
    sparse = load_concepts(tmp_path / "out").activations
    assert is_sparse(sparse)
    with torch.no_grad():
        expected = sae.encode(Z)
    assert torch.allclose(sparse.to_dense(), expected, atol=1e-5)
    column = activation_column(load_concepts(tmp_path / "out").activations, 7)
    assert torch.allclose(column, expected[:, 7], atol=1e-5)


def _cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue().strip()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("spoil, message", [
    (lambda p: (p / "cfg.json").unlink(), "has sae_weights.safetensors but no cfg.json"),
    (lambda p: (p / "sae_weights.safetensors").unlink(), "holds no SAE"),
    (lambda p: _truncate(p / "sae_weights.safetensors"), "cannot read .*truncated or not a safetensors"),
    (lambda p: (p / "cfg.json").write_text('{"architecture": "gated", "d_in": 16, "d_sae": 40}'),
     "architecture 'gated' cannot be imported"),
    (lambda p: (p / "cfg.json").write_text("{not json"), "not a readable JSON file"),
    (lambda p: (p / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 16, "d_sae": 41,
                                                      "metadata": {"hook_name": HOOK}})),
     "the config says d_sae=41 but the weights have 40"),
])
def test_bad_saelens_folders_are_one_line_and_write_nothing(store, tmp_path, spoil, message):
    saelens(tmp_path / "sae", "standard", D, K)
    spoil(tmp_path / "sae")
    code, err = _cli(["import-sae", str(tmp_path / "sae"), "--features", str(store[0]), "--out",
                      str(tmp_path / "out"), "--no-ground"])
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_wrong_width_and_bad_state_dicts_are_refused(store, tmp_path):
    saelens(tmp_path / "narrow", "standard", D - 4, K)
    with pytest.raises(MMConceptsError, match="reads 12-wide activations but the feature store .* holds 16-wide"):
        import_sae(tmp_path / "narrow", features=store[0], out=tmp_path / "out")
    dictionary_learning(tmp_path / "dl", "AutoEncoderTopK", D, K)
    torch.save({"k": torch.tensor(4), "note": "not a tensor"}, tmp_path / "dl" / "ae.pt")
    with pytest.raises(MMConceptsError, match="not a state_dict of tensors"):
        import_sae(tmp_path / "dl", features=store[0], out=tmp_path / "out")
    dictionary_learning(tmp_path / "dl2", "AutoEncoderTopK", D, K, layer=3, submodule="mlp_out_layer_3")
    with pytest.raises(MMConceptsError, match="layer 3, submodule 'mlp_out_layer_3'.* give .* with --layer"):
        import_sae(tmp_path / "dl2", features=store[0], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
