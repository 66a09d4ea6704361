"""Property tests (Hypothesis) of the estimators' invariants, on generated data.

- activations are non-negative for the methods that promise it (``nonnegative_activations``), whatever the
  data (semi-nmf, nmf, kmeans, simple, the sparse autoencoders);
- Semi-NMF's objective never increases from one iteration to the next (nor its error when ``l1 = 0``);
- ``transform`` of the training data matches ``fit_transform`` (on identifiable problems: planted
  dictionaries with at most as many concepts as were planted).

Examples are few (``max_examples=15``), derandomised (the same examples on every run) and without
deadline, so the module stays fast and stable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmconcepts.decompose import METHODS, SemiNMF

from decompose_helpers import planted

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NONNEGATIVE = [name for name, cls in METHODS.items() if cls.nonnegative_activations]
FAST = {"semi-nmf": {"max_iter": 10}, "nmf": {"max_iter": 10}, "topk-sae": {"max_iter": 3},
        "batchtopk-sae": {"max_iter": 3}, "jumprelu-sae": {"max_iter": 3}, "matryoshka-sae": {"max_iter": 3},
        "relu-sae": {"max_iter": 3},
        "reference-dl": {"l1": 0.05, "max_iter": 10}}

matrices = st.tuples(st.integers(8, 40), st.integers(2, 12)).flatmap(
    lambda shape: arrays(np.float32, shape, elements=st.floats(-10, 10, width=32)))


@st.composite
def problems(draw):
    """A planted dictionary problem: ``(Z, K, l1)`` with ``K`` at most the planted number of concepts."""
    k = draw(st.integers(1, 4))
    Z, _, _ = planted(n=draw(st.integers(40, 150)), d=draw(st.integers(8, 24)), k=k,
                      max_active=draw(st.integers(1, k)), noise=draw(st.sampled_from([0.0, 0.01, 0.1])),
                      seed=draw(st.integers(0, 10_000)))
    return Z, draw(st.integers(1, k)), draw(st.sampled_from([0.0, 0.001, 0.01, 0.05]))


def test_the_promise_is_kept_by_the_right_methods():
    assert NONNEGATIVE == ["semi-nmf", "nmf", "kmeans", "simple", "topk-sae", "batchtopk-sae", "jumprelu-sae", "matryoshka-sae", "relu-sae", "reference-dl"]


@pytest.mark.parametrize("name", NONNEGATIVE)
@SETTINGS
@given(Z=matrices)
def test_activations_are_nonnegative(name, Z):
    if METHODS[name]._nonnegative_input:
        Z = np.abs(Z)
    K = min(3, Z.shape[0])
    model = METHODS[name](n_concepts=K, **FAST.get(name, {})).fit(torch.from_numpy(Z))
    V = model.transform(torch.from_numpy(Z))
    assert V.shape == (Z.shape[0], K) and bool(torch.isfinite(V).all()) and bool((V >= 0).all())


@SETTINGS
@given(problem=problems())
def test_semi_nmf_objective_never_increases(problem):
    Z, K, l1 = problem
    model = SemiNMF(K, l1=l1, tol=0.0, max_iter=25, seed=0).fit(Z)
    slack = 1e-5 * 0.5 * float(Z.double().square().sum())  # float rounding of the objective
    obj = model.objective_curve_
    assert len(obj) == len(model.loss_curve_) == model.n_iter_ >= 1
    assert all(b <= a + slack for a, b in zip(obj, obj[1:])), obj
    if l1 == 0:
        err = model.loss_curve_
        assert all(b * b <= a * a + 1e-5 for a, b in zip(err, err[1:])), err  # squared: same rounding


@pytest.mark.parametrize("name", ["semi-nmf", "nmf", "pca", "kmeans", "simple", "topk-sae"])
@SETTINGS
@given(problem=problems())
def test_transform_of_the_training_data_matches_fit_transform(name, problem):
    Z, K, l1 = problem
    params = dict(FAST.get(name, {}))
    if name in ("semi-nmf", "nmf"):
        params = {"l1": l1}
    if name == "nmf":
        Z = Z.abs()
    model = METHODS[name](n_concepts=K, **params)
    V = model.fit_transform(Z)
    V2 = model.transform(Z)
    scale = float(V.abs().max()) + 1e-6
    assert float((V - V2).abs().max()) <= 2e-2 * scale
    if name in ("semi-nmf", "nmf", "pca"):  # the training error is that of the training codes
        err = model.reconstruction_err_
        assert abs(model.reconstruction_error(Z) - err) <= 2e-2 * (err + 1e-3)
