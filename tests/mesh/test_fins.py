"""A closed surface with a fin (a stray triangle on one of its edges, a non-manifold edge) is
repaired by `clean`: the fin removed and named in a log line, never a crash."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.remesh import clean


def _with_fin(sphere: Mesh, n_fins: int = 1) -> Mesh:
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    extra_v, extra_f = [], []
    for k in range(n_fins):
        a, b = f[10 * k, :2]
        extra_v.append(1.3 * 0.5 * (v[a] + v[b]))
        extra_f.append([a, b, len(v) + k])
    return Mesh(np.vstack([v, extra_v]), np.vstack([f, extra_f]), name="fin.ply")


@pytest.mark.parametrize("n_fins", [1, 3])
def test_clean_removes_fins_and_says_so(icosphere, caplog, n_fins):
    finned = _with_fin(icosphere, n_fins)
    assert not finned.is_watertight
    with caplog.at_level(logging.WARNING):
        out = clean(finned)
    assert out.is_watertight
    assert (out.n_vertices, out.n_faces) == (icosphere.n_vertices, icosphere.n_faces)
    assert out.volume == pytest.approx(icosphere.volume)
    assert f"fin.ply: removed {n_fins} face(s) hanging off non-manifold edges" in caplog.text


def test_orientation_survives_a_face_with_no_manifold_neighbour(icosphere):
    f = np.asarray(_with_fin(icosphere).faces)
    out = geo.orient_faces_consistently(f)  # the fin is a component of one face
    np.testing.assert_array_equal(out[:-1], np.asarray(icosphere.faces))
