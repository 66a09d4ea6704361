import pytest
import torch

from mmconcepts.decompose import SemiNMF, load_dictionary
from mmconcepts.errors import MMConceptsError

from decompose_helpers import match_cosine, planted


def test_recovers_planted_dictionary():
    Z, _, U = planted()
    model = SemiNMF(6, seed=0)
    V = model.fit_transform(Z)
    assert match_cosine(U, model.components_) >= 0.95
    assert bool((V >= 0).all())
    assert model.reconstruction_err_ < 1e-2
    assert torch.allclose(model.components_.norm(dim=1), torch.ones(6), atol=1e-5)


def test_l1_recovers_harder_dictionary_with_exact_zeros():
    Z, V_true, U = planted(n=800, d=64, k=12, max_active=4, noise=0.05, seed=1)
    model = SemiNMF(12, l1=0.02, seed=0)
    V = model.fit_transform(Z)
    assert match_cosine(U, model.components_) >= 0.95
    assert float((V == 0).float().mean()) > 0.6  # exact zeros, not just small values
    assert model.sparsity_ > 0.6
    assert torch.all(model.components_.norm(dim=1) <= 1 + 1e-5)


def test_transform_matches_training_codes():
    Z, _, _ = planted(noise=0.05)
    model = SemiNMF(6, l1=0.01, seed=0)
    V = model.fit_transform(Z)
    V2 = model.transform(Z)
    assert torch.allclose(V, V2, atol=1e-3)
    assert model.inverse_transform(V2).shape == Z.shape
    assert abs(model.reconstruction_error(Z) - model.reconstruction_err_) < 1e-3


def test_partial_fit_over_shards_close_to_full_batch():
    Z, _, _ = planted(n=1200, d=48, k=6, noise=0.1, seed=2)
    full = SemiNMF(6, seed=0).fit(Z)
    online = SemiNMF(6, seed=0)
    for _ in range(4):
        for s in range(0, 1200, 200):
            online.partial_fit(Z[s:s + 200])
    assert online.reconstruction_error(Z) <= 1.02 * full.reconstruction_err_
    shards = [Z[s:s + 200] for s in range(0, 1200, 200)]
    streamed = SemiNMF(6, seed=0).fit_shards(shards)
    assert streamed.reconstruction_err_ <= 1.02 * full.reconstruction_err_
    codes = SemiNMF(6, seed=0).fit_transform_shards(lambda: iter(shards))
    assert codes.shape == (1200, 6) and bool((codes >= 0).all())


@pytest.mark.parametrize("l1", [0.0, 0.02])
def test_loss_curve_never_increases(l1):
    """The objective after each iteration's V-step (``objective_curve_``) is non-increasing; so is the error
    (``loss_curve_``) without L1. Recorded by fit and fit_shards, one value an iteration."""
    Z, _, _ = planted(n=800, d=64, k=12, max_active=4, noise=0.05, seed=1)
    model = SemiNMF(12, l1=l1, tol=1e-7, seed=0).fit(Z)
    obj, err = model.objective_curve_, model.loss_curve_
    assert len(obj) == len(err) == len(model.time_curve_) == model.n_iter_ > 5
    slack = 1e-6 * 0.5 * float(Z.double().square().sum())
    assert all(b <= a + slack for a, b in zip(obj, obj[1:]))
    assert obj[-1] < obj[0]
    if l1 == 0:
        assert all(b <= a + 1e-6 for a, b in zip(err, err[1:]))
    streamed = SemiNMF(12, l1=l1, seed=0).fit_shards([Z[:400], Z[400:]])
    assert len(streamed.objective_curve_) == streamed.n_iter_


def test_same_seed_same_concepts_bit_for_bit():
    Z, _, _ = planted(noise=0.1)
    a = SemiNMF(6, seed=3).fit(Z).components_
    b = SemiNMF(6, seed=3).fit(Z).components_
    assert torch.equal(a, b)


def test_save_load_round_trip(tmp_path):
    Z, _, _ = planted(noise=0.05)
    model = SemiNMF(6, l1=0.01, seed=0).fit(Z)
    model.save(tmp_path / "dict")
    loaded = load_dictionary(tmp_path / "dict")
    assert isinstance(loaded, SemiNMF) and loaded.get_params() == model.get_params()
    assert torch.equal(loaded.components_, model.components_)
    assert loaded.n_iter_ == model.n_iter_ and loaded.reconstruction_err_ == model.reconstruction_err_
    assert torch.equal(loaded.transform(Z[:50]), model.transform(Z[:50]))
    assert sorted(p.name for p in (tmp_path / "dict").iterdir()) == ["dictionary.json", "dictionary.safetensors"]


def test_init_components_and_numpy_input():
    Z, _, U = planted()
    model = SemiNMF(6, tol=1e-6).fit(Z.numpy(), init_components=U)
    assert match_cosine(U, model.components_) > 0.999
    with pytest.raises(MMConceptsError, match="init_components has 5 rows, expected 6"):
        SemiNMF(6).fit(Z, init_components=U[:5])


@pytest.mark.parametrize("kwargs, match", [
    ({"n_concepts": 0}, "n_concepts"),
    ({"l1": -1.0}, "l1"),
    ({"l1": 0.1, "normalize_concepts": False}, "normalize_concepts"),
    ({"init": "svd"}, "init"),
    ({"max_iter": 0}, "max_iter"),
    ({"tol": float("nan")}, "tol"),
    ({"device": "tpu"}, "device"),
    ({"seed": -1}, "seed"),
])
def test_parameters_validated_by_fit(kwargs, match):
    # scikit-learn's rule: __init__ only stores the parameters (was: validated in __init__); fit checks them
    model = SemiNMF(**{"n_concepts": 4, **kwargs})
    assert model.get_params()[next(iter(kwargs))] is next(iter(kwargs.values()))
    Z = planted(n=50, d=8, k=4)[0]
    for fit in (model.fit, model.partial_fit, lambda Z: model.fit_shards([Z])):
        with pytest.raises(MMConceptsError, match=match):
            fit(Z)


def test_fit_shards_refuses_one_shot_generator():
    Z, _, _ = planted()
    with pytest.raises(MMConceptsError, match="generator"):
        SemiNMF(6).fit_shards(z for z in [Z])


def test_unused_concept_is_restarted():
    Z, _, U = planted(seed=8)
    Q, _ = torch.linalg.qr(torch.cat([U.T, torch.randn(48, 1)], 1))
    outside = Q[:, -1]  # orthogonal to every sample: no sample can use it
    init = U.clone()
    init[2] = outside
    model = SemiNMF(6, tol=1e-6)
    V = model.fit_transform(Z, init_components=init)
    assert bool((V.sum(0) > 0).all())
    assert match_cosine(U, model.components_) >= 0.95


def test_partial_fit_continues_from_loaded_dictionary(tmp_path):
    Z, _, _ = planted(noise=0.05, seed=9)
    model = SemiNMF(6, seed=0).fit(Z)
    loaded = load_dictionary(model.save(tmp_path / "d"))
    loaded.partial_fit(Z[:300])
    assert match_cosine(model.components_, loaded.components_) > 0.99
    assert loaded.n_iter_ == 1


def test_fused_cuda_kernel_matches_torch_sweeps():
    """The Triton HALS kernel, run by Triton's interpreter on the CPU, gives the torch path's result."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    code = (
        "import torch\n"
        "from mmconcepts.decompose._hals_triton import hals_sweeps_fused\n"
        "from mmconcepts.decompose.nnls import hals_sweeps, least_squares_start\n"
        "g = torch.Generator().manual_seed(0)\n"
        "U, Z = torch.randn(5, 12, generator=g), torch.randn(70, 12, generator=g)\n"
        "U[3] = 0\n"
        "G, B = U @ U.T, U @ Z.T\n"
        "a = least_squares_start(B, G, 0.1); b = a.clone()\n"
        "hals_sweeps(a, B, G, l1=0.1, max_sweeps=4); hals_sweeps_fused(b, B, G, 0.1, 4)\n"
        "assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()\n"
        "assert torch.equal(a == 0, b == 0) and bool((b[3] == 0).all())\n"
    )
    env = {**__import__("os").environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
