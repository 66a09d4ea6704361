"""Stability: the Hungarian matched cosine on hand-made concept sets, and refits of planted dictionaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.extended.stability import matched_cosine, stability


def test_permuted_and_sign_flipped_copy_matches_at_one_with_absolute_cosine():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 12))
    B = (A * np.array([1, -1, 1, -1, -1])[:, None])[[3, 0, 4, 1, 2]] * 7.0  # permuted, flipped, rescaled
    assert matched_cosine(A, B, absolute=True) == pytest.approx(1.0)
    assert matched_cosine(A, B) < 1.0  # with signs, -u is another concept
    assert matched_cosine(A, A[[2, 0, 1, 4, 3]]) == pytest.approx(1.0)


def test_orthogonal_sets_match_at_zero_and_a_negated_copy_is_not_the_same():
    eye = np.eye(6)
    assert matched_cosine(eye[:3], eye[3:]) == 0.0
    assert matched_cosine(eye[:3], eye[3:], absolute=True) == 0.0
    # all flipped: the best matching of signed cosines avoids the -1 pairs -> orthogonal pairs, 0
    assert matched_cosine(eye[:3], -eye[:3]) == 0.0


def test_the_matching_is_optimal_not_greedy():
    # cosines [[0.6, 0.5], [0.5, 0.1]]: greedy takes 0.6 then 0.1 (mean 0.35), the best matching 0.5 + 0.5
    A = np.eye(4)[:2]
    B = np.array([[0.6, 0.5, math.sqrt(1 - 0.36 - 0.25), 0.0], [0.5, 0.1, 0.0, math.sqrt(1 - 0.25 - 0.01)]])
    assert np.allclose(A @ B.T, [[0.6, 0.5], [0.5, 0.1]])
    assert matched_cosine(A, B) == pytest.approx(0.5)


def test_sets_of_different_sizes_match_the_smaller_and_zero_rows_count_zero():
    A = np.eye(3, 5)
    assert matched_cosine(A, A[:2]) == pytest.approx(1.0)  # min(K1, K2) = 2 pairs, both exact
    assert matched_cosine([[1.0, 0.0]], [[0.0, 1.0], [2.0, 0.0]]) == pytest.approx(1.0)
    assert matched_cosine([[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0]]) == pytest.approx(1 / math.sqrt(2))
    assert matched_cosine([[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.5)
    assert matched_cosine(torch.eye(2), torch.eye(2)) == pytest.approx(1.0)  # torch in


@pytest.mark.parametrize("A, B", [(np.eye(2, 3), np.eye(2, 4)), (np.zeros((0, 3)), np.eye(2, 3)),
                                  (np.ones(3), np.eye(2, 3)), ([[np.nan, 1.0]], [[1.0, 0.0]])])
def test_bad_concept_matrices_are_one_line_errors(A, B):
    with pytest.raises(MMConceptsError):
        matched_cosine(A, B)


def _planted(n=240, d=16, k=4, seed=0):
    """Features that are sparse non-negative mixtures of k fixed directions, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(d, k, generator=g))[0].T * 3.0
    V = torch.rand(n, k, generator=g) * (torch.rand(n, k, generator=g) < 0.5)
    return V @ U + 0.01 * torch.randn(n, d, generator=g), U


def test_pca_is_deterministic_across_seeds_and_recovers_planted_directions_on_halves():
    Z, _ = _planted()
    Z = Z * torch.tensor([4.0, 3.0, 2.0, 1.0] + [1.0] * 12)  # distinct variances: a well-defined basis
    result = stability("pca", Z, 3, solver="full")
    assert result["stability"] == pytest.approx(1.0)
    assert 0.9 < result["stability_halves"] <= 1.0


def test_kmeans_finds_well_separated_clusters_again_and_noise_less_so():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 8, generator=g) * 10
    clustered = centres[torch.arange(200) % 4] + 0.1 * torch.randn(200, 8, generator=g)
    found = stability("kmeans", clustered, 4, seed=0)
    assert found["stability"] > 0.99 and found["stability_halves"] > 0.99
    noise = stability("kmeans", torch.randn(200, 8, generator=g), 4, seed=0)
    assert noise["stability_halves"] < found["stability_halves"]


def test_semi_nmf_on_planted_directions_and_the_relative_l1_of_learn():
    from mmconcepts.decompose import SemiNMF

    Z, U = _planted(seed=2)
    result = stability("semi-nmf", Z, 4, seed=0, relative_l1=0.01, max_iter=100)
    assert result["stability"] > 0.95 and result["stability_halves"] > 0.95
    # relative_l1 means l1 = r * mean norm, as learn computes it: passing that fit as the first changes nothing
    first = SemiNMF(4, l1=0.01 * float(Z.norm(dim=1).mean()), max_iter=100, seed=0).fit(Z)
    assert stability("semi-nmf", Z, 4, seed=0, fitted=first, relative_l1=0.01, max_iter=100) == result


def test_a_scikit_learn_class_is_a_method_too():
    from sklearn.decomposition import PCA as SkPCA

    Z, _ = _planted(seed=3)
    result = stability(SkPCA, Z.numpy(), 3, svd_solver="full")  # n_components, random_state
    assert result["stability"] == pytest.approx(1.0) and 0.0 < result["stability_halves"] <= 1.0


def test_bad_requests_are_one_line_errors():
    Z, _ = _planted(n=20)
    with pytest.raises(MMConceptsError, match="unknown method"):
        stability("no-such-method", Z, 3)
    with pytest.raises(MMConceptsError, match="no parameter"):
        stability("pca", Z, 3, nonsense=1)
    with pytest.raises(MMConceptsError, match="at least 24 samples"):
        stability("pca", Z, 12)
    # without the halves, 20 samples are enough for 12 concepts: the seed stability alone
    assert set(stability("pca", Z, 12, halves=False)) == {"stability"}

    class NoComponents:
        def __init__(self, n_components=2):
            self.n_components = n_components

        def fit(self, X):
            return self

    with pytest.raises(MMConceptsError, match="components_"):
        stability(NoComponents, Z.numpy(), 2)
