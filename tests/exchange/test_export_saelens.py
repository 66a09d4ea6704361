"""``mmconcepts export --format saelens``: the export of every SAE method loads in SAELens and encodes as ours;
Semi-NMF's approximate encoder is measured and the measure recorded; PCA's two sides are 2K exact latents."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from export_helpers import sae_methods, shapes_run

from mmconcepts.cli import main
from mmconcepts.concepts import load_concepts
from mmconcepts.exchange.export import export
from mmconcepts.extract.features import load_features


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shapes_run(tmp_path_factory)


@pytest.fixture(scope="module")
def sae_lens():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("sae_lens")


def _loaded(sae_lens, folder, concepts):
    sae = sae_lens.SAE.load_from_disk(folder)
    Z, _ = load_features(concepts.features, concepts.summary["layer"], concepts.token)
    with torch.no_grad():
        return sae, sae.encode(Z), concepts.encode(Z), Z


@pytest.mark.parametrize("method", sae_methods())
def test_sae_export_encodes_as_ours_in_saelens(run, sae_lens, tmp_path, method):
    result = export(run[method], tmp_path / "sae", format="saelens")
    concepts = load_concepts(run[method])
    sae, theirs, ours, _ = _loaded(sae_lens, tmp_path / "sae", concepts)
    assert ours.abs().max() > 0 and theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    mine = cfg["metadata"]["mmconcepts"]
    assert mine["exact"] and mine["fidelity"]["relative_difference"] == result.record.relative_difference <= 1e-6
    assert cfg["metadata"]["hook_name"] == "ln_final.hook_normalized"
    assert sae.cfg.apply_b_dec_to_input == bool(concepts.dictionary.input_centred_)
    if method == "topk-sae":
        assert cfg["architecture"] == "topk" and sae.cfg.k == int((ours > 0).sum(1).max())


def test_semi_nmf_export_says_how_far_it_is(run, sae_lens, tmp_path):
    export(run["semi-nmf"], tmp_path / "sae", format="saelens")
    concepts = load_concepts(run["semi-nmf"])
    sae, theirs, ours, Z = _loaded(sae_lens, tmp_path / "sae", concepts)
    fidelity = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]["mmconcepts"]["fidelity"]
    measured = float((theirs - ours).norm() / ours.norm())
    assert measured > 1e-3  # no linear encoder reproduces the solver's codes ...
    assert fidelity["relative_difference"] == pytest.approx(measured, rel=1e-4)  # ... and the export says how far
    assert fidelity["n_samples"] == Z.shape[0]
    top1 = float((theirs.argmax(1) == ours.argmax(1))[ours.amax(1) > 0].float().mean())
    assert fidelity["top1_agreement"] == pytest.approx(top1)
    readme = (tmp_path / "sae" / "README.md").read_text()
    assert "pinv(U)" in readme and f"{fidelity['relative_difference']:.3g}" in readme
    torch.testing.assert_close(sae.W_dec.detach(), concepts.dictionary.components_.float())


def test_pca_export_is_both_sides_exactly(run, sae_lens, tmp_path):
    export(run["pca"], tmp_path / "sae", format="saelens")
    concepts = load_concepts(run["pca"])
    sae, theirs, ours, Z = _loaded(sae_lens, tmp_path / "sae", concepts)
    K = concepts.dictionary.components_.shape[0]
    assert sae.cfg.d_sae == 2 * K == ours.shape[1]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the decoder gives PCA's reconstruction
        rebuilt = concepts.dictionary.inverse_transform(concepts.dictionary.transform(Z))
        torch.testing.assert_close(sae.decode(theirs), rebuilt, atol=1e-4, rtol=1e-4)


def test_export_refuses_bad_inputs_in_one_line(run, tmp_path, capsys):
    def fails(*args) -> str:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    assert "not a concepts folder" in fails("--concepts", str(run["features"]), "--format", "saelens",
                                            "--out", str(tmp_path / "a"))
    assert "not found" in fails("--concepts", str(tmp_path / "none"), "--format", "saelens",
                                "--out", str(tmp_path / "a"))
    assert "invalid choice: 'onnx'" in fails("--concepts", str(run["pca"]), "--format", "onnx",
                                             "--out", str(tmp_path / "a"))
    assert "inside the input" in fails("--concepts", str(run["pca"]), "--format", "saelens",
                                       "--out", str(run["pca"] / "x"))
    assert not (tmp_path / "a").exists() and not (run["pca"] / "x").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep").write_text("mine")
    assert "--overwrite" in fails("--concepts", str(run["pca"]), "--format", "saelens", "--out", str(tmp_path / "a"))
    assert (tmp_path / "a" / "keep").read_text() == "mine"
    assert main(["export", "--concepts", str(run["pca"]), "--format", "saelens", "--out", str(tmp_path / "a"),
                 "--overwrite"]) == 0
    assert "relative difference" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["README.md", "cfg.json", "sae_weights.safetensors"]
