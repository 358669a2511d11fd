"""Shared vertex placement of the synthetic cohorts: area-weighted candidates, farthest points."""

from __future__ import annotations

import numpy as np
import pytest

from shapeatlas.data.surface_sampling import area_candidates, farthest_points


def test_farthest_points_picks_the_far_end_first_then_fills_the_gaps():
    line = np.stack([np.arange(11.0), np.zeros(11), np.zeros(11)], axis=1)  # x = 0 .. 10
    picked = farthest_points(line, line[:1], 3)
    assert picked[0] == 10 and picked[1] == 5  # farthest from the seed, then the middle gap
    assert picked[2] in (2, 3, 7, 8)
    with pytest.raises(ValueError, match="cannot pick 12"):
        farthest_points(line, line[:1], 12)


def test_area_candidates_follow_the_surface_area_and_stay_on_the_sphere():
    grid_u = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0],
                       [0, 0, -1.0]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    cand = area_candidates(grid_u, faces, np.array([9.0, 1.0]), 20000,
                           rng=np.random.default_rng(0))
    assert np.allclose(np.linalg.norm(cand, axis=1), 1.0)
    in_first = (cand > 0).all(axis=1).mean()  # the first face's octant
    assert in_first == pytest.approx(0.9, abs=0.01)
