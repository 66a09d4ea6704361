import pytest
import torch

from mmconcepts.decompose import (METHODS, NMF, PCA, BatchTopKSAE, JumpReLUSAE, KMeans, MatryoshkaSAE, ReferenceDL, ReLUSAE,
                                  SemiNMF, Simple, TopKSAE, load_dictionary)
from mmconcepts.errors import MMConceptsError

from decompose_helpers import match_cosine, planted


def test_registry_in_documented_order():
    assert list(METHODS) == ["semi-nmf", "nmf", "pca", "kmeans", "simple", "topk-sae", "batchtopk-sae", "jumprelu-sae", "matryoshka-sae", "relu-sae", "reference-dl"]
    from mmconcepts.cli.learn import METHOD_NAMES

    assert tuple(METHODS) == METHOD_NAMES


def test_nmf_recovers_planted_nonnegative_dictionary():
    Z, _, U = planted(nonnegative_concepts=True, seed=4)
    model = NMF(6, l1=0.002, seed=0)
    V = model.fit_transform(Z)
    assert match_cosine(U, model.components_) >= 0.95
    assert bool((V >= 0).all()) and bool((model.components_ >= 0).all())


def test_nmf_refuses_negative_features():
    with pytest.raises(MMConceptsError, match="non-negative"):
        NMF(2).fit(torch.randn(20, 5))


def test_pca_finds_the_planted_subspace():
    Z, _, U = planted(noise=0.0)
    pca = PCA(6).fit(Z)
    W = pca.components_
    assert torch.allclose(W @ W.T, torch.eye(6), atol=1e-4)
    # the planted concepts lie in the span of the components (up to the mean, which PCA removes)
    Uc = U - (U @ W.T) @ W
    assert float(Uc.norm() / U.norm()) < 0.6  # the mean direction is one dimension of 7
    assert pca.reconstruction_err_ < 1e-3
    V = pca.transform(Z)
    assert bool((V < 0).any()) and not pca.nonnegative_activations
    assert torch.allclose(pca.inverse_transform(V), Z, atol=1e-3)
    full = PCA(6, solver="full").fit(Z)
    assert torch.allclose(full.components_.abs(), pca.components_.abs(), atol=1e-3)


def test_pca_refuses_more_components_than_rank():
    with pytest.raises(MMConceptsError, match="at most"):
        PCA(6).fit(torch.randn(20, 5))


def test_kmeans_recovers_cluster_centres():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 5
    Z = centres.repeat(60, 1) + 0.1 * torch.randn(300, 16, generator=g)
    km = KMeans(5, seed=0).fit(Z)
    assert match_cosine(centres, km.components_) >= 0.99
    V = km.transform(Z)
    assert bool((V > 0).all()) and bool((V <= 1).all())
    d = torch.cdist(Z[:3], km.components_)
    assert torch.allclose(V[:3], 1 / (1 + d), atol=1e-4)
    assert km.inverse_transform(V).shape == Z.shape


def test_simple_picks_largest_norm_samples():
    Z, _, _ = planted(noise=0.05)
    s = Simple(4).fit(Z)
    expected = torch.argsort(Z.norm(dim=1), descending=True, stable=True)[:4]
    assert torch.equal(s.indices_, expected) and torch.equal(s.components_, Z[expected])
    V = s.transform(Z)
    assert bool((V > 0).all()) and torch.allclose(V[expected[0], 0], torch.tensor(1.0))


def test_topk_sae_recovers_planted_dictionary_with_k_active():
    Z, _, U = planted(n=1000, d=32, k=6, max_active=2, seed=5)
    sae = TopKSAE(6, k=2, max_iter=30, lr=1e-2, batch_size=100, seed=0).fit(Z)
    V = sae.transform(Z)
    assert bool((V >= 0).all()) and int((V > 0).sum(1).max()) <= 2
    assert match_cosine(U, sae.components_) >= 0.9
    assert sae.reconstruction_err_ < 0.2
    before = sae.reconstruction_err_
    sae.partial_fit(Z[:200])
    assert sae.n_iter_ > 0 and sae.reconstruction_err_ < 2 * before + 0.05


def test_reference_dl_wrapper_gives_positive_codes():
    Z, _, U = planted(n=80, d=12, k=3, seed=6)
    ref = ReferenceDL(3, l1=0.01, max_iter=30).fit(Z)
    V = ref.transform(Z)
    assert bool((V >= 0).all()) and V.shape == (80, 3)
    assert match_cosine(U, ref.components_) >= 0.95
    assert ref.reconstruction_err_ < 0.1


FACTORIES = {
    "semi-nmf": lambda: SemiNMF(4, seed=1),
    "nmf": lambda: NMF(4, seed=1),
    "pca": lambda: PCA(4, seed=1),
    "kmeans": lambda: KMeans(4, seed=1),
    "simple": lambda: Simple(4),
    "topk-sae": lambda: TopKSAE(4, k=2, max_iter=5, seed=1),
    "batchtopk-sae": lambda: BatchTopKSAE(4, k=2, max_iter=5, batch_size=50, seed=1),
    "jumprelu-sae": lambda: JumpReLUSAE(4, max_iter=5, seed=1),
    "matryoshka-sae": lambda: MatryoshkaSAE(4, k=2, n_groups=2, max_iter=5, batch_size=50, seed=1),
    "relu-sae": lambda: ReLUSAE(4, max_iter=5, seed=1),
    "reference-dl": lambda: ReferenceDL(4, l1=0.01, max_iter=5, seed=1),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_every_method_round_trips_and_is_deterministic(name, tmp_path):
    Z, _, _ = planted(n=200, d=16, k=4, noise=0.05, seed=7, nonnegative_concepts=True)
    Z = Z.clamp(min=0)  # non-negative so that NMF takes it too
    model = FACTORIES[name]().fit(Z)
    again = FACTORIES[name]().fit(Z)
    assert torch.equal(model.components_, again.components_)
    assert model.components_.shape == (4, 16) and model.n_features_in_ == 16
    assert isinstance(model.n_iter_, int) and 0 <= model.reconstruction_err_ < 1.5
    V = model.transform(Z)
    assert V.shape == (200, 4) and V.dtype == torch.float32
    if model.nonnegative_activations:
        assert bool((V >= 0).all())
    assert model.inverse_transform(V).shape == Z.shape
    model.save(tmp_path / name)
    loaded = load_dictionary(tmp_path / name)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    for attr in model._fitted_tensors:
        assert torch.equal(getattr(loaded, attr), getattr(model, attr))
    assert torch.allclose(loaded.transform(Z), V, atol=1e-5)
    with pytest.raises(MMConceptsError, match="expects 16"):
        loaded.transform(torch.randn(3, 17))
