"""The pointing game, the energy inside and the baselines, on grids and objects checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmconcepts.evaluation.attribution import map_scores as M
from mmconcepts.evaluation.attribution.heatmaps import markdown_table

BOX = (0, 0, 64, 64)  # an 8 x 8 grid of 8 px cells over a 64 px ShapesWorld image


def _one_hot(r, c, n=8):
    grid = np.zeros((n, n))
    grid[r, c] = 1.0
    return grid


def test_pointing_hit_tolerance_is_radius_plus_half_a_cell():
    """A small circle (radius 7) at (14, 32): cell (3, 1) has its centre at (12, 28), 4.5 px away (a hit);
    cell (3, 0) at (4, 28), sqrt(116) = 10.77 <= 7 + 4 (a hit); cell (2, 0) at (4, 20), sqrt(244) = 15.6 (a miss)."""
    obj = {"x": 14.0, "y": 32.0, "size": "small"}
    assert M.pointing_hit(_one_hot(3, 1), BOX, obj)
    assert M.pointing_hit(_one_hot(3, 0), BOX, obj)
    assert not M.pointing_hit(_one_hot(2, 0), BOX, obj)
    assert M.pointing_hit(_one_hot(2, 0), BOX, {"x": 14.0, "y": 32.0, "radius": 11.7})  # 15.6 <= 11.7 + 4


def test_pointing_takes_the_first_peak_and_uses_the_box():
    grid = np.zeros((2, 2))
    grid[0, 1] = grid[1, 0] = 5.0  # tie: the first in row-major order, cell (0, 1)
    obj = {"x": 30.0, "y": 10.0, "radius": 2.0}
    assert M.pointing_hit(grid, (0, 0, 40, 40), obj)  # cell (0, 1) centre (30, 10)
    assert not M.pointing_hit(grid, (0, 40, 40, 80), obj)  # the same grid lower down: centre (30, 50)


def test_inside_fractions_of_a_disc_on_a_unit_grid():
    """A disc of radius 1 centred on the corner of four 1 px cells covers pi / 4 of each."""
    f = M.inside_fractions((0, 0, 2, 2), 2, 2, {"x": 1.0, "y": 1.0, "radius": 1.0})
    np.testing.assert_allclose(f, np.full((2, 2), math.pi / 4), atol=0.02)
    assert M.inside_fractions((0, 0, 2, 2), 2, 2, {"x": 10.0, "y": 10.0, "radius": 1.0}).sum() == 0


def test_energy_inside_counts_only_positive_mass():
    """A cell fully inside (value 3), a cell outside (1), a negative cell inside (ignored): 3 / 4."""
    obj = {"x": 4.0, "y": 4.0, "radius": 6.0}  # covers cell (0, 0) of 4 px cells entirely, not (0, 3)
    grid = np.zeros((4, 4))
    grid[0, 0], grid[0, 3], grid[1, 0] = 3.0, 1.0, -5.0
    assert M.inside_fractions((0, 0, 16, 16), 4, 4, obj)[0, 0] == 1.0
    assert M.inside_fractions((0, 0, 16, 16), 4, 4, obj)[0, 3] == 0.0
    assert M.energy_inside(grid, (0, 0, 16, 16), obj) == pytest.approx(0.75)
    assert M.energy_inside(-np.ones((4, 4)), (0, 0, 16, 16), obj) == 0.0


def test_random_patch_is_the_expectation_over_cells():
    """An object covering the whole image: every cell hits, every cell is fully inside."""
    big = {"x": 32.0, "y": 32.0, "radius": 100.0}
    assert M.random_patch_scores(BOX, 8, 8, big) == {"pointing_game": 1.0, "energy_inside": 1.0}
    obj = {"x": 14.0, "y": 32.0, "size": "small"}
    rand = M.random_patch_scores(BOX, 8, 8, obj)
    hits = sum(M.pointing_hit(_one_hot(r, c), BOX, obj) for r in range(8) for c in range(8))
    assert rand["pointing_game"] == pytest.approx(hits / 64)
    assert rand["energy_inside"] == pytest.approx(math.pi * 49 / 64 ** 2, rel=0.02)  # the disc's area share


def test_centre_baseline_and_object_mask():
    centre = M.centre_grid(8, 8)
    assert centre.shape == (8, 8) and centre[3, 3] == centre[4, 4] == centre.max()
    left = {"x": 14.0, "y": 32.0, "size": "small"}
    assert not M.pointing_hit(centre, BOX, left)  # peak cell (3, 3), centre (28, 28): 14.6 px > 7 + 4
    mask = M.object_grid(BOX, 8, 8, left)
    assert M.pointing_hit(mask, BOX, left)
    f = M.inside_fractions(BOX, 8, 8, left)
    assert M.energy_inside(mask, BOX, left) == pytest.approx((f ** 2).sum() / f.sum())


def test_score_maps_and_baselines_rows():
    objs = [{"x": 14.0, "y": 32.0, "size": "small"}, {"x": 50.0, "y": 32.0, "size": "large"}]
    maps = [{"grid": _one_hot(4, 1), "box": BOX}, {"grid": _one_hot(0, 0), "box": BOX}]
    row = M.score_maps(maps, objs)
    assert row["pointing_game"] == 0.5 and row["n_images"] == 2
    assert row["energy_inside"] == pytest.approx(M.inside_fractions(BOX, 8, 8, objs[0])[4, 1] / 2, abs=1e-4)
    base = M.baseline_scores(maps, objs)
    assert list(base) == list(M.BASELINES) and base["object-mask"]["pointing_game"] == 1.0
    lines = markdown_table({"n_images": 2, "grid": [8, 8], "methods": {"attribution": row}, "baselines": base})
    assert lines[0] == "## Concept maps: top-1 concept of 2 test images, 8 x 8 grid"
    assert "| attribution | 0.500 |" in lines[4]
