"""The directions a concept is steered with and its default strength, against hand computations on the tiny
LLaVA pipeline's concepts."""

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import load_features
from mmconcepts.interventions.directions import (STRENGTH_FACTOR, concept_direction, default_strength,
                                             diffmean_direction, random_direction)
from mmconcepts.concepts.decoding import typical_strengths


# ---- directions and strengths ----------------------------------------------------------------------------------
def test_concept_and_random_directions(setup):
    concepts = setup["concepts"]
    u = concept_direction(concepts, 1)
    torch.testing.assert_close(u, concepts.directions[1] / concepts.directions[1].norm())
    r = random_direction(3 * u, seed=5)
    assert r.shape == u.shape and float(r.norm()) == pytest.approx(3.0, rel=1e-6)
    assert torch.equal(r, random_direction(3 * u, seed=5)) and not torch.equal(r, random_direction(3 * u, seed=6))
    assert abs(float(r @ u)) < 3.0  # not the concept itself


def test_centred_direction_is_the_concept_less_its_mean_component(setup):
    from mmconcepts.interventions.directions import centred_direction, unit_direction

    concepts = setup["concepts"]
    mean = torch.randn(64, generator=torch.Generator().manual_seed(3))
    u = concepts.directions[2] / concepts.directions[2].norm()
    m = mean / mean.norm()
    expected = (u - (u @ m) * m) / (u - (u @ m) * m).norm()
    got = centred_direction(concepts, 2, mean)
    torch.testing.assert_close(got, expected)
    assert abs(float(got @ mean)) < 1e-4 and abs(float(got.norm()) - 1) < 1e-5
    calls = []
    assert torch.equal(unit_direction(concepts, 2, "centred", mean=lambda: calls.append(1) or mean), got)
    assert torch.equal(unit_direction(concepts, 2, "concept", mean=lambda: calls.append(1) or mean), u / u.norm())
    assert calls == [1]  # the mean is read only by the direction that needs it
    with pytest.raises(MMConceptsError, match="lies along the mean state"):
        centred_direction(concepts, 2, concepts.directions[2] * 3)
    with pytest.raises(MMConceptsError, match="unknown direction"):
        unit_direction(concepts, 2, "sideways")


def test_diffmean_direction_is_the_hand_computation(setup):
    concepts = setup["concepts"]
    Z, _ = load_features(setup["train"], "norm")
    A = concepts.activations[:, 2]
    order = sorted(range(len(A)), key=lambda i: (-float(A[i]), i))
    for n_top, default in ((7, False), (Z.shape[0] // concepts.n_concepts, True)):
        top = order[:n_top]
        rest = [i for i in range(len(A)) if i not in top]
        expected = Z[top].mean(dim=0) - Z[rest].mean(dim=0)
        got = diffmean_direction(concepts, 2, Z, n_top=None if default else n_top)
        torch.testing.assert_close(got, expected)
    with pytest.raises(MMConceptsError, match="n_top"):
        diffmean_direction(concepts, 2, Z, n_top=Z.shape[0])
    with pytest.raises(MMConceptsError, match="training samples"):
        diffmean_direction(concepts, 2, Z[:5])


def test_default_strength_is_the_typical_activation_times_the_factor(setup):
    concepts = setup["concepts"]
    typical = typical_strengths(concepts.activations)
    for k in range(concepts.n_concepts):  # Semi-NMF concepts are unit vectors
        assert default_strength(concepts, k) == pytest.approx(float(typical[k]) * STRENGTH_FACTOR, rel=1e-5)
    assert default_strength(concepts, 0, factor=1.0) == pytest.approx(float(typical[0]), rel=1e-5)
