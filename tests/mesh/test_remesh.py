"""Edge splitting (`mesh.remesh.split_long_edges`, `even_out`, `decimate_even`): QSlim leaves a
flat cap without vertices inside; splitting gives it vertices without moving the surface."""

from __future__ import annotations

import numpy as np
import pytest

from shapeatlas.data.synthetic_lv import LVParams, triangulate_lv
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.remesh import decimate, decimate_even, even_out, split_long_edges
from shapeatlas.metrics.surface import closest_points_on_surface

#: The synthetic LV's basal cap is the plane z = H_MM (no tilt).
H_MM = 24.0


@pytest.fixture(scope="module")
def lv() -> Mesh:
    p = LVParams(c_mm=70.0, b_mm=27.0, h_mm=H_MM, septal_flattening=0.2)
    t = triangulate_lv(p, n_vertices=3000, rng=np.random.default_rng(0))
    return Mesh(t.vertices, t.faces, name="lv")


def inner_cap_share(mesh: Mesh) -> float:
    """Share of the vertices on the cap and inside 0.8 of its radius."""
    v = np.asarray(mesh.vertices)
    on = np.abs(v[:, 2] - H_MM) < 0.05
    r = np.hypot(v[:, 0], v[:, 1])
    return float((on & (r < 0.8 * r[on].max())).mean())


def edge_lengths(mesh: Mesh) -> np.ndarray:
    v = np.asarray(mesh.vertices)
    e = geo.unique_edges(np.asarray(mesh.faces))
    return np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)


def test_split_long_edges_adds_vertices_without_moving_the_surface(lv):
    coarse = decimate(lv, target_vertices=500)
    assert inner_cap_share(coarse) < 0.015 < 0.05 < inner_cap_share(lv)  # QSlim emptied it
    limit = 2.0 * float(np.median(edge_lengths(coarse)))
    out = split_long_edges(coarse, limit)
    v, w = np.asarray(coarse.vertices), np.asarray(out.vertices)
    assert out.is_watertight and out.volume == pytest.approx(coarse.volume, rel=1e-9)
    np.testing.assert_array_equal(w[:len(v)], v)  # the old vertices stay, in order
    near = closest_points_on_surface(w, v, np.asarray(coarse.faces)).points
    assert np.abs(near - w).max() < 1e-9  # every new vertex lies on the old surface
    assert edge_lengths(out).max() <= limit
    assert inner_cap_share(out) > 0.04
    assert split_long_edges(out, limit) is out  # nothing left to split
    assert even_out(out, ratio=100.0) is out
    with pytest.raises(ValueError, match="max_edge"):
        split_long_edges(coarse, 0.0)


def test_decimate_even_gives_the_cap_vertices_and_hits_the_target(lv):
    plain = decimate(lv, target_vertices=500)
    even = decimate_even(lv, target_vertices=500)
    assert plain.n_vertices == even.n_vertices == 500 and even.is_watertight
    assert inner_cap_share(even) > 4 * inner_cap_share(plain)
    assert even.volume == pytest.approx(lv.volume, rel=0.02)
