"""The sparse autoencoders (relu-sae, topk-sae, batchtopk-sae, jumprelu-sae, matryoshka-sae): recovery of a
planted dictionary, each method's own invariant, streaming, ``from_weights`` and bad parameters.

The save / load / ``partial_fit`` contract is in test_decompose_online.py, the scikit-learn checks in
test_decompose_sklearn.py, both parametrised over these methods too.
"""

from __future__ import annotations

import json

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.decompose import (BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TopKSAE, learn,
                                  load_dictionary)
from mmconcepts.decompose.batchtopk_sae import batch_topk_codes
from mmconcepts.decompose.sae import SparseAutoencoder
from mmconcepts.decompose.sae_weights import from_weights
from mmconcepts.errors import MMConceptsError

from decompose_helpers import make_store, match_cosine, planted

NEW = {
    "batchtopk-sae": lambda **kw: BatchTopKSAE(6, k=2, **kw),
    "jumprelu-sae": lambda **kw: JumpReLUSAE(6, target_l0=2, **kw),
    "matryoshka-sae": lambda **kw: MatryoshkaSAE(6, k=2, n_groups=2, **kw),
    "relu-sae": lambda **kw: ReLUSAE(6, **kw),
}


@pytest.fixture(scope="module")
def recovery():
    return planted(n=1000, d=32, k=6, max_active=2, seed=5)


@pytest.mark.parametrize("name", list(NEW))
def test_recovers_planted_dictionary(name, recovery):
    Z, _, U = recovery
    sae = NEW[name](max_iter=30, lr=1e-2, batch_size=100, seed=0).fit(Z)
    V = sae.transform(Z)
    assert isinstance(sae, SparseAutoencoder) and sae.method == name and sae.input_centred_ is True
    assert bool((V >= 0).all())
    assert match_cosine(U, sae.components_) >= 0.9
    assert sae.reconstruction_err_ < 0.25
    assert torch.allclose(sae.components_.norm(dim=1), torch.ones(6), atol=1e-5)  # unit-norm concepts
    assert float((V > 0).sum(1).float().mean()) < 4.5  # sparse: 6 concepts, 1 or 2 planted per sample


def test_batchtopk_keeps_k_per_sample_on_average(recovery):
    Z, _, _ = recovery
    pre = torch.randn(50, 6)
    v = batch_topk_codes(pre, 2)
    assert int((v > 0).sum()) == min(100, int((pre > 0).sum()))  # k * B over the batch, not k per row
    assert int((v > 0).sum(1).max()) > 2 or int((v > 0).sum(1).min()) < 2
    sae = BatchTopKSAE(6, k=2, max_iter=30, lr=1e-2, batch_size=100, seed=0).fit(Z)
    assert torch.all(sae.threshold_ == sae.threshold_[0]) and float(sae.threshold_[0]) > 0
    mean_l0 = float((sae.transform(Z) > 0).sum(1).float().mean())
    assert 1.0 <= mean_l0 <= 3.0  # the inference threshold keeps about k per sample
    V = sae.transform(Z)
    assert bool(((V == 0) | (V > sae.threshold_)).all())


def test_jumprelu_activations_are_zero_or_above_their_threshold(recovery):
    Z, _, _ = recovery
    sae = JumpReLUSAE(6, target_l0=4, max_iter=10, lr=1e-2, batch_size=100, seed=0).fit(Z)
    V = sae.transform(Z)
    assert bool(((V == 0) | (V > sae.threshold_)).all())
    assert len(set(sae.threshold_.tolist())) > 1  # one learnt threshold per concept
    sparse = JumpReLUSAE(6, target_l0=1, max_iter=10, lr=1e-2, batch_size=100, seed=0).fit(Z)
    l0_sparse, l0_dense = (float((A > 0).sum(1).float().mean()) for A in (sparse.transform(Z), V))
    assert l0_sparse < l0_dense  # the L0 target sets the sparsity
    assert abs(l0_sparse - 1) < abs(l0_sparse - 4) and abs(l0_dense - 4) < abs(l0_dense - 1)


def test_relu_sae_l1_sparsifies(recovery):
    Z, _, _ = recovery
    dense = ReLUSAE(6, l1=0.0, max_iter=10, batch_size=100, seed=0).fit(Z)
    sparse = ReLUSAE(6, l1=0.2, max_iter=10, batch_size=100, seed=0).fit(Z)
    assert float((sparse.transform(Z) > 0).sum()) < float((dense.transform(Z) > 0).sum())


def test_matryoshka_first_group_reconstructs_alone():
    """The first group of a Matryoshka SAE reconstructs far better than a same-size prefix of a BatchTopK."""
    Z, _, _ = planted(n=2000, d=32, k=12, max_active=3, seed=6)

    def prefix_error(sae, size):
        V = sae.transform(Z)
        V[:, size:] = 0
        return float((Z - sae.inverse_transform(V)).norm() / Z.norm())

    mat = MatryoshkaSAE(24, k=3, group_sizes=[4, 20], max_iter=20, batch_size=100, seed=0).fit(Z)
    plain = BatchTopKSAE(24, k=3, max_iter=20, batch_size=100, seed=0).fit(Z)
    assert mat.groups_ == [4, 20] and MatryoshkaSAE(64).groups_ == [4, 9, 17, 34]
    assert prefix_error(mat, 4) < prefix_error(plain, 4) - 0.1


@pytest.mark.parametrize("cls", [BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TopKSAE])
def test_fit_shards_is_fit_for_one_shard_and_streams_several(cls):
    Z, _, _ = planted(n=300, d=16, k=4, noise=0.05, seed=13)
    one = cls(4, max_iter=3, tol=0.0, batch_size=50, seed=2)
    V = one.fit_transform_shards([Z])
    ref = cls(4, max_iter=3, tol=0.0, batch_size=50, seed=2).fit(Z)
    for name in ref._fitted_tensors:
        assert torch.equal(getattr(one, name), getattr(ref, name)), name
    assert torch.equal(V, ref.transform(Z)) and one.n_iter_ == ref.n_iter_ == 3
    assert one.reconstruction_err_ == pytest.approx(ref.reconstruction_err_, rel=1e-6)
    shards = [Z[s:s + 100] for s in range(0, 300, 100)]
    many = cls(4, max_iter=2, batch_size=50, seed=2)
    V = many.fit_transform_shards(lambda: iter(shards))
    assert V.shape == (300, 4) and many.n_iter_ == 2 and many.reconstruction_err_ < 1.0
    with pytest.raises(MMConceptsError, match="generator"):
        many.fit_shards(iter(shards))


@pytest.mark.parametrize("method, extra", [("relu-sae", {}), ("topk-sae", {"k": 2}),
                                           ("batchtopk-sae", {"threshold": 0.3, "k": 2}),
                                           ("jumprelu-sae", {"threshold": torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])}),
                                           ("matryoshka-sae", {"threshold": torch.tensor(0.3)})])
@pytest.mark.parametrize("centred", [True, False])
def test_from_weights_encodes_as_documented_and_round_trips(method, extra, centred, tmp_path):
    g = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)  # decoder of any norm
    b_enc, b_dec, Z = torch.randn(5, generator=g), torch.randn(8, generator=g), torch.randn(40, 8, generator=g)
    sae = from_weights(method, W_enc, b_enc, W_dec, b_dec, input_centred=centred, **extra)
    pre = (Z - b_dec * centred) @ W_enc.T + b_enc
    expected = {"relu-sae": lambda: pre.relu(),
                "topk-sae": lambda: torch.zeros_like(pre).scatter(1, pre.topk(2).indices, pre.topk(2).values.relu()),
                "jumprelu-sae": lambda: pre.relu() * (pre > extra.get("threshold", 0))}.get(
        method, lambda: pre.relu() * (pre.relu() > extra.get("threshold", 0)))()
    V = sae.transform(Z)
    assert torch.allclose(V, expected, atol=1e-5)
    assert torch.allclose(sae.inverse_transform(V), V @ W_dec + b_dec, atol=1e-5)
    assert sae.n_iter_ == 0 and sae.input_scale_ == 1.0 and sae.reconstruction_err_ != sae.reconstruction_err_
    loaded = load_dictionary(sae.save(tmp_path / "sae"))
    assert type(loaded) is type(sae) and loaded.input_centred_ is centred
    assert torch.equal(loaded.transform(Z), V)
    if centred:  # training continues from the imported weights
        loaded.partial_fit(Z)
        assert loaded.n_iter_ == 1 and loaded.reconstruction_err_ == loaded.reconstruction_err_
    else:
        with pytest.raises(MMConceptsError, match="cannot be trained further"):
            loaded.partial_fit(Z)


@pytest.mark.parametrize("call, match", [
    (lambda: from_weights("pca", torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2)), "not a sparse auto"),
    (lambda: from_weights("jumprelu-sae", torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2)),
     "needs its inference threshold"),
    (lambda: from_weights("relu-sae", torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2), threshold=1.0),
     "has no threshold"),
    (lambda: from_weights("relu-sae", torch.eye(2, 3), torch.zeros(2), torch.eye(2), torch.zeros(2)),
     r"W_enc has shape \[2, 3\], expected \[2, 2\]"),
    (lambda: from_weights("relu-sae", torch.eye(2), torch.zeros(3), torch.eye(2), torch.zeros(2)), "b_enc has shape"),
    (lambda: from_weights("topk-sae", torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2), k=3), "cannot exceed"),
    (lambda: from_weights("relu-sae", torch.eye(2) * float("nan"), torch.zeros(2), torch.eye(2), torch.zeros(2)),
     "NaN"),
])
def test_from_weights_refuses_bad_tensors(call, match):
    with pytest.raises(MMConceptsError, match=match) as exc:
        call()
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("model, match", [
    (BatchTopKSAE(4, k=5), "cannot exceed"), (BatchTopKSAE(4, threshold_beta=1.0), "threshold_beta must be below"),
    (JumpReLUSAE(4, bandwidth=0.0), "bandwidth must be"), (JumpReLUSAE(4, sparsity_coefficient=-1), "sparsity_coef"),
    (JumpReLUSAE(4, init_threshold=0), "init_threshold"), (ReLUSAE(4, l1=-0.1), "l1 must be"),
    (MatryoshkaSAE(4, group_sizes=[1, 2]), "sum to 3, not n_concepts=4"), (MatryoshkaSAE(4, group_sizes=[0, 4]),
                                                                          "group size"),
    (MatryoshkaSAE(4, group_sizes="22"), "list of positive ints"), (MatryoshkaSAE(4, n_groups=0), "n_groups"),
    (ReLUSAE(4, lr=0), "lr must be"), (TopKSAE(4, batch_size=0), "batch_size"),
])
def test_bad_parameters_refused_with_one_line(model, match):
    with pytest.raises(MMConceptsError, match=match) as exc:
        model.fit(torch.randn(20, 5))
    assert "\n" not in str(exc.value)


def test_topk_sae_saved_before_input_centred_loads(tmp_path):
    sae = TopKSAE(3, k=1, max_iter=2).fit(torch.randn(30, 4))
    path = sae.save(tmp_path / "old")
    info = json.loads((path / "dictionary.json").read_text())
    del info["attributes"]["input_centred_"]  # as topk-sae wrote it before the SAE variants
    (path / "dictionary.json").write_text(json.dumps(info))
    assert load_dictionary(path).input_centred_ is True


@pytest.mark.parametrize("method", ["batchtopk-sae", "jumprelu-sae", "matryoshka-sae", "relu-sae"])
def test_cli_learn_new_methods(method, tmp_path, capsys):
    Z, _, _ = planted(n=120, d=12, k=3, noise=0.05, seed=3)
    store = make_store(tmp_path / "features", Z)
    args = ["learn", "--features", str(store), "--layer", "3", "--method", method, "--n-concepts", "4",
            "--max-iter", "3", "--out", str(tmp_path / method), "--no-ground"]
    assert main(args) == 0
    assert f"learnt 4 {method} concepts" in capsys.readouterr().out
    summary = json.loads((tmp_path / method / "summary.json").read_text())
    assert summary["method"] == method and summary["n_iter"] == 3
    assert load_dictionary(tmp_path / method).method == method
    streamed = learn(store, "3", method=method, n_concepts=4, max_iter=3, stream=True, out=tmp_path / "s")
    assert json.loads((streamed / "summary.json").read_text())["streamed"] is True
