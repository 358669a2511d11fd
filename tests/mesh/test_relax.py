"""Tangential relaxation slides vertices along the surface: folds go, the shape stays."""

from __future__ import annotations

import numpy as np
import trimesh

from shapeatlas.mesh.relax import relax_tangentially
from shapeatlas.mesh.validity import inverted_faces


def test_relaxation_unfolds_tangential_jitter_and_keeps_the_sphere():
    s = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    v = np.asarray(s.vertices)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    jitter = rng.normal(size=v.shape) * 1.2
    jitter -= np.sum(jitter * n, axis=1, keepdims=True) * n  # tangential only
    noisy = v + jitter
    noisy *= 30.0 / np.linalg.norm(noisy, axis=1, keepdims=True)  # back onto the sphere
    assert len(inverted_faces(noisy, s.faces, v)) > 0
    out = relax_tangentially(noisy[None], s.faces, iterations=10)[0]
    assert len(inverted_faces(out, s.faces, v)) == 0
    r = np.linalg.norm(out, axis=1)
    assert np.abs(r - 30.0).max() < 0.5  # still on the sphere (1% of its radius at most)
    assert np.array_equal(noisy, noisy)  # input untouched
    np.testing.assert_allclose(relax_tangentially(noisy, s.faces, iterations=10), out)


def test_zero_iterations_is_the_identity():
    s = trimesh.creation.icosphere(subdivisions=1)
    np.testing.assert_array_equal(relax_tangentially(s.vertices, s.faces, iterations=0),
                                  s.vertices)
