"""One ``partial_fit`` contract for every method that streams (semi-nmf, nmf, the sparse autoencoders).

``partial_fit`` continues from the current fitted state, whether it came from ``fit``, from earlier
``partial_fit`` calls or from ``load_dictionary`` (the online state is saved with the dictionary, so the
round trip changes nothing, bit for bit); ``fit`` resets everything, the online statistics included.
"""

from __future__ import annotations

import pytest
import torch

from mmconcepts.decompose import NMF, BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, SemiNMF, TopKSAE, load_dictionary
from mmconcepts.errors import MMConceptsError

from decompose_helpers import planted

FACTORIES = {
    "semi-nmf": lambda: SemiNMF(4, l1=0.01, seed=2),
    "nmf": lambda: NMF(4, seed=2),
    "topk-sae": lambda: TopKSAE(4, k=2, max_iter=4, batch_size=50, seed=2),
    "batchtopk-sae": lambda: BatchTopKSAE(4, k=2, max_iter=4, batch_size=50, seed=2),
    "jumprelu-sae": lambda: JumpReLUSAE(4, max_iter=4, batch_size=50, seed=2),
    "matryoshka-sae": lambda: MatryoshkaSAE(4, k=2, n_groups=2, max_iter=4, batch_size=50, seed=2),
    "relu-sae": lambda: ReLUSAE(4, max_iter=4, batch_size=50, seed=2),
}
SAES = ("topk-sae", "batchtopk-sae", "jumprelu-sae", "matryoshka-sae", "relu-sae")


@pytest.fixture(scope="module")
def data():
    Z, _, _ = planted(n=300, d=16, k=4, noise=0.05, seed=13, nonnegative_concepts=True)
    Z = Z.clamp(min=0)
    return Z, [Z[s:s + 100] for s in range(0, 300, 100)], planted(n=300, d=16, k=4, seed=14,
                                                                   nonnegative_concepts=True)[0].clamp(min=0)


def _state(model) -> dict:
    names = model._fitted_tensors + model._state_tensors
    out = {n: getattr(model, n).clone() for n in names if hasattr(model, n)}
    out.update({n: getattr(model, n) for n in model._fitted_scalars + model._state_scalars if hasattr(model, n)})
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fit_resets_the_online_state(name, data):
    Z, shards, other = data
    model = FACTORIES[name]()
    model.fit(other).partial_fit(shards[0]).partial_fit(shards[1])  # stale statistics from another run
    model.fit(Z).partial_fit(shards[2])
    fresh = FACTORIES[name]().fit(Z).partial_fit(shards[2])
    _assert_same(_state(model), _state(fresh))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_partial_fit_continues_identically_after_save_and_load(name, data, tmp_path):
    Z, shards, _ = data
    for start in ("fit", "partial_fit"):
        model = FACTORIES[name]()
        model.fit(Z) if start == "fit" else model.partial_fit(shards[0]).partial_fit(shards[1])
        loaded = load_dictionary(model.save(tmp_path / f"{name}-{start}"))
        _assert_same(_state(loaded), _state(model))  # the online state is saved, not only the concepts
        for shard in shards:
            model.partial_fit(shard)
            loaded.partial_fit(shard)
        _assert_same(_state(loaded), _state(model))
        assert torch.equal(loaded.transform(Z), model.transform(Z))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_partial_fit_continues_from_fit(name, data):
    """One more small step after ``fit`` keeps the fitted concepts (no silent re-initialisation)."""
    Z, shards, _ = data
    model = FACTORIES[name]().fit(Z)
    before, n_iter = model.components_.clone(), model.n_iter_
    model.partial_fit(shards[0])
    cos = torch.nn.functional.cosine_similarity(before, model.components_, dim=1)
    assert float(cos.min()) > 0.98
    if name in SAES:
        assert model.n_iter_ == n_iter + 1  # epochs of fit, then one more
    else:
        assert model.n_iter_ == 1  # batches seen since fit


def test_topk_sae_saves_its_input_scale_and_training_state(data, tmp_path):
    Z, shards, _ = data
    sae = TopKSAE(4, k=2, max_iter=3, seed=0).fit(10 * Z)
    loaded = load_dictionary(sae.save(tmp_path / "sae"))
    assert loaded.input_scale_ == sae.input_scale_ > 1.0
    assert loaded._adam_steps == sae._adam_steps > 0
    assert torch.equal(loaded._rng_state, sae._rng_state)


def test_topk_sae_partial_fit_from_scratch_initialises_once(data):
    _, shards, _ = data
    sae = TopKSAE(4, k=2, seed=0).partial_fit(shards[0])
    assert sae.n_iter_ == 1 and sae._adam_steps == 1
    first = sae.components_.clone()
    sae.partial_fit(shards[1])
    assert sae.n_iter_ == 2 and sae._adam_steps == 2
    assert float(torch.nn.functional.cosine_similarity(first, sae.components_, dim=1).min()) > 0.9


@pytest.mark.parametrize("name", list(FACTORIES))
def test_partial_fit_refuses_a_changed_n_concepts(name, data):
    Z, shards, _ = data
    model = FACTORIES[name]().fit(Z)
    model.set_params(n_concepts=3)
    with pytest.raises(MMConceptsError, match="call fit"):
        model.partial_fit(shards[0])
    model.fit(Z)
    assert model.components_.shape[0] == 3


def test_fit_shards_starts_from_scratch(data):
    Z, shards, other = data
    model = SemiNMF(4, seed=1).partial_fit(other)
    model.fit_shards(shards)
    assert not hasattr(model, "_online_A")
    fresh = SemiNMF(4, seed=1).fit_shards(shards)
    assert torch.equal(model.components_, fresh.components_)
